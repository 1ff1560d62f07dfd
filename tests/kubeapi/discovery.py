"""Discovery documents, built from the registry on every request.

/api (APIVersions), /api/v1 and /apis/<g>/<v> (APIResourceList, with a
``<plural>/status`` entry for each status subresource), /apis (APIGroupList),
/apis/<g> (APIGroup) and /version. Built on demand, so a CRD shows up (and
goes) with the very next request, as the real server's discovery does once the
CRD is Established. Aggregated discovery (apidiscovery.k8s.io/v2) is not
served; clients that ask for it accept the legacy documents, as they do from
older servers.
"""

from __future__ import annotations

from .registry import Registry

VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0+fluxgate.kubeapi",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def group_list(registry: Registry) -> dict:
    groups = [_group(g, vs) for g, vs in registry.groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(registry: Registry, name: str) -> dict | None:
    versions = registry.groups().get(name)
    if not name or not versions:
        return None
    return dict(_group(name, versions), kind="APIGroup", apiVersion="v1")


def resource_list(registry: Registry, group_name: str, version: str) -> dict | None:
    resources = registry.in_group_version(group_name, version)
    if not resources:
        return None
    entries = []
    for r in sorted(resources, key=lambda r: r.plural):
        entry = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                 "kind": r.kind, "verbs": list(r.verbs)}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entries.append(entry)
        if r.status:
            entries.append({"name": f"{r.plural}/status", "singularName": "",
                            "namespaced": r.namespaced, "kind": r.kind,
                            "verbs": ["get", "patch", "update"]})
    doc = {"kind": "APIResourceList", "groupVersion": f"{group_name}/{version}"
           if group_name else version, "resources": entries}
    if group_name:
        doc["apiVersion"] = "v1"
    return doc
