"""What the server can serve: one ``Resource`` per (group, plural), by version.

Rules:
* a Resource is stored once and served at each of its versions; a request's
  version only changes the ``apiVersion`` written on the way out (a CRD's
  conversion strategy ``None``, which is all this server models);
* custom resources come and go with their CustomResourceDefinition:
  ``resource_from_crd`` is the one translation from a CRD object, so
  pre-registered kinds and test-installed CRDs behave alike;
* the registry is mutated only under the store's lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DNS_SUBDOMAIN = "subdomain"
DNS_LABEL = "label"  # RFC 1123 label: namespaces
DNS_1035 = "label1035"  # RFC 1035 label: services

_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(eq=False)
class Resource:
    group: str
    versions: tuple[str, ...]  # served, preferred first
    plural: str
    singular: str
    kind: str
    namespaced: bool
    status: bool = False  # has the /status subresource
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    generation: bool = False  # keeps metadata.generation
    create_on_update: bool = False  # PUT of a missing object creates it
    return_deleted: bool = False  # DELETE answers with the object, not a Status
    strategic_merge: bool = True  # built-ins take strategic-merge patches, CRs do not
    custom: bool = False  # served from a CustomResourceDefinition
    name_rule: str = DNS_SUBDOMAIN
    selectable_fields: tuple[str, ...] = ()
    schemas: dict = field(default_factory=dict)  # version -> openAPIV3Schema
    verbs: tuple[str, ...] = _VERBS

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified_plural(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version


_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple:
    """Sort key for versions as Kubernetes orders them: GA, then beta, then alpha,
    higher numbers first, then anything else alphabetically."""
    m = _VERSION.match(version)
    if not m:
        return (3, 0, 0, version)
    major, level, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[level]
    return (rank, -major, -minor, version)


def resource_from_crd(crd: dict) -> Resource:
    """The Resource a CustomResourceDefinition serves."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    served.sort(key=lambda v: version_priority(v["name"]))
    schemas = {v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") for v in served}
    selectable = []
    for v in served:
        for f in v.get("selectableFields") or []:
            selectable.append(f.get("jsonPath", "").lstrip("."))
    return Resource(
        group=spec.get("group", ""),
        versions=tuple(v["name"] for v in served),
        plural=names.get("plural", ""),
        singular=names.get("singular") or names.get("kind", "").lower(),
        kind=names.get("kind", ""),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        status=any("status" in (v.get("subresources") or {}) for v in served),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        generation=True,
        return_deleted=True,
        strategic_merge=False,
        custom=True,
        selectable_fields=tuple(selectable),
        schemas=schemas,
    )


class Registry:
    """Resources by (group, plural); the lookups the HTTP layer needs."""

    def __init__(self):
        self._resources: dict[tuple[str, str], Resource] = {}

    def add(self, resource: Resource) -> None:
        self._resources[resource.key] = resource

    def remove(self, group: str, plural: str) -> Resource | None:
        return self._resources.pop((group, plural), None)

    def get(self, group: str, plural: str) -> Resource | None:
        return self._resources.get((group, plural))

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        resource = self._resources.get((group, plural))
        if resource is None or version not in resource.versions:
            return None
        return resource

    def by_kind(self, group: str, version: str, kind: str) -> Resource | None:
        for resource in self._resources.values():
            if resource.group == group and resource.kind == kind and version in resource.versions:
                return resource
        return None

    def __iter__(self):
        return iter(list(self._resources.values()))

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first, groups in registration order."""
        out: dict[str, list[str]] = {}
        for resource in self._resources.values():
            versions = out.setdefault(resource.group, [])
            for v in resource.versions:
                if v not in versions:
                    versions.append(v)
        for versions in out.values():
            versions.sort(key=version_priority)
        return out

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return [r for r in self._resources.values() if r.group == group and version in r.versions]
