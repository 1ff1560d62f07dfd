"""What a write does to an object before it is stored, per kind.

This is the part of the real server's registry "strategies" a client can
observe. Every function takes and returns plain dicts and never touches the
store; the store calls them under its lock, in this order:

create:  ``prepare_create`` → ``validate``
update:  ``prepare_update`` (or ``prepare_status_update``) → ``validate``

Rules kept here:
* system metadata (uid, creationTimestamp, generation, deletionTimestamp)
  comes from the server, never from the body; an update keeps the stored one;
* kinds with a status subresource: create drops ``.status`` (then the kind's
  initial status or schema default applies), a main update keeps the stored
  ``.status``, a status update changes nothing but ``.status``;
* ``metadata.generation`` (for kinds that keep one) is 1 at creation and grows
  by one when anything but metadata (and status, when status is a
  subresource) changes, or when deletion starts;
* custom resources go through their schema: prune, default, validate;
* cluster IPs and node ports come from ``allocator`` (the store:
  ``allocate_ip()``, ``allocate_node_port()``), and an update keeps them.
"""

from __future__ import annotations

import base64
import copy
import re
import uuid
from datetime import datetime, timezone

from . import schema as crschema
from .errors import invalid

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NAME_RULES = {
    "subdomain": (_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of lower case "
                  "alphanumeric characters, '-' or '.', and must start and end with an "
                  "alphanumeric character"),
    "label": (_LABEL, 63, "a lowercase RFC 1123 label must consist of lower case alphanumeric "
              "characters or '-', and must start and end with an alphanumeric character"),
    "label1035": (_LABEL_1035, 63, "a DNS-1035 label must consist of lower case alphanumeric "
                  "characters or '-', start with an alphabetic character, and end with an "
                  "alphanumeric character"),
}
_SERVER_FIELDS = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "resourceVersion", "selfLink")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_of(resource, obj: dict) -> dict:
    """What ``metadata.generation`` tracks: everything but metadata (and status
    when status is a subresource)."""
    skip = {"metadata", "apiVersion", "kind"}
    if resource.status:
        skip.add("status")
    return {k: v for k, v in obj.items() if k not in skip}


def prepare_create(resource, obj: dict, allocator) -> dict:
    meta = obj["metadata"]
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    if resource.generation:
        meta["generation"] = 1
    if resource.status:
        obj.pop("status", None)
    _kind_defaults(resource, obj, None, allocator)
    if resource.custom:
        obj = _through_schema(resource, obj)
    return obj


def prepare_update(resource, new: dict, old: dict, allocator) -> dict:
    _keep_server_metadata(new, old)
    if resource.status:
        new.pop("status", None)
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
    _kind_defaults(resource, new, old, allocator)
    if resource.custom:
        new = _through_schema(resource, new)
    _bump_generation(resource, new, old)
    return new


def prepare_status_update(resource, new: dict, old: dict) -> dict:
    out = copy.deepcopy(old)
    if "status" in new:
        out["status"] = new["status"]
    else:
        out.pop("status", None)
    if resource.custom:
        out = _through_schema(resource, out)
    return out


def start_deletion(resource, obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["metadata"]["deletionTimestamp"] = now()
    out["metadata"]["deletionGracePeriodSeconds"] = 0
    if resource.generation:
        out["metadata"]["generation"] = out["metadata"].get("generation", 1) + 1
    if resource.key == ("", "namespaces"):
        out.setdefault("status", {})["phase"] = "Terminating"
    return out


def _keep_server_metadata(new: dict, old: dict) -> None:
    meta, old_meta = new["metadata"], old["metadata"]
    for key in ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds"):
        meta.pop(key, None)
        if key in old_meta:
            meta[key] = old_meta[key]
    meta.pop("selfLink", None)


def _bump_generation(resource, new: dict, old: dict) -> None:
    if resource.generation and spec_of(resource, new) != spec_of(resource, old):
        new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1


def _through_schema(resource, obj: dict) -> dict:
    version = resource.versions[0]
    schema = resource.schemas.get(version)
    obj = crschema.prune(obj, schema)
    return crschema.default(obj, schema)


def validate(resource, obj: dict, old: dict | None) -> None:
    meta = obj["metadata"]
    name = meta.get("name", "")
    causes = []
    rule, limit, text = _NAME_RULES[resource.name_rule]
    if len(name) > limit:
        causes.append(("FieldValueInvalid", "metadata.name",
                       f'Invalid value: "{name}": must be no more than {limit} characters'))
    elif not rule.match(name):
        pattern = rule.pattern.strip("^$")
        causes.append(("FieldValueInvalid", "metadata.name",
                       f"Invalid value: \"{name}\": {text} (regex used for validation is "
                       f"'{pattern}')"))
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is not None and (not isinstance(value, dict) or not all(
                isinstance(v, str) for v in value.values())):
            causes.append(("FieldValueInvalid", f"metadata.{field}",
                           "Invalid value: must be a map of strings"))
    if old is not None and old["metadata"].get("deletionTimestamp"):
        added = set(meta.get("finalizers") or ()) - set(old["metadata"].get("finalizers") or ())
        if added:
            causes.append(("FieldValueForbidden", "metadata.finalizers",
                           "Forbidden: no new finalizers can be added if the object is being "
                           "deleted, found new finalizers " + repr(sorted(added))))
    if resource.custom:
        causes += crschema.validate(obj, resource.schemas.get(resource.versions[0]))
    if resource.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        causes += _validate_crd(obj)
    if causes:
        raise invalid(resource, name, causes)


def _validate_crd(obj: dict) -> list:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    causes = []
    for field in ("group", "scope"):
        if not spec.get(field):
            causes.append(("FieldValueRequired", f"spec.{field}", "Required value"))
    for field in ("plural", "kind"):
        if not names.get(field):
            causes.append(("FieldValueRequired", f"spec.names.{field}", "Required value"))
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if obj["metadata"].get("name") != expected:
        causes.append(("FieldValueInvalid", "metadata.name",
                       f"Invalid value: \"{obj['metadata'].get('name')}\": must be "
                       "spec.names.plural+\".\"+spec.group"))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("FieldValueRequired", "spec.versions", "Required value"))
    elif sum(bool(v.get("storage")) for v in versions) != 1:
        causes.append(("FieldValueInvalid", "spec.versions",
                       "Invalid value: must have exactly one version marked as storage version"))
    return causes


# -- per-kind defaults (what the real defaulting and PrepareForCreate add) -----------

def _kind_defaults(resource, obj: dict, old: dict | None, allocator) -> None:
    key = resource.key
    if key == ("", "namespaces"):
        obj["metadata"].setdefault("labels", {})[NAMESPACE_NAME_LABEL] = obj["metadata"]["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        if old is None:
            obj["status"] = {"phase": "Active"}
    elif key == ("", "services"):
        _service_defaults(resource, obj, old, allocator)
    elif key == ("", "secrets"):
        _secret_defaults(resource, obj)
    elif key == ("networking.k8s.io", "ingresses") and old is None:
        obj["status"] = {"loadBalancer": {}}
    elif key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        _crd_defaults(obj, old)


def _service_defaults(resource, obj: dict, old: dict | None, allocator) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if spec["type"] != "ExternalName":
        old_spec = (old or {}).get("spec") or {}
        if old is not None and old_spec.get("clusterIP"):
            if spec.get("clusterIP") not in (None, "", old_spec["clusterIP"]):
                raise invalid(resource, obj["metadata"]["name"], [
                    ("FieldValueInvalid", "spec.clusterIPs[0]",
                     f'Invalid value: ["{spec["clusterIP"]}"]: may not change once set')])
            spec["clusterIP"] = old_spec["clusterIP"]
        elif not spec.get("clusterIP"):
            spec["clusterIP"] = allocator.allocate_ip()
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        old_ports = {p.get("port"): p.get("nodePort")
                     for p in ((old or {}).get("spec") or {}).get("ports") or []}
        for port in spec.get("ports") or []:
            if not port.get("nodePort"):
                port["nodePort"] = (old_ports.get(port.get("port"))
                                    or allocator.allocate_node_port())
    if old is None:
        obj["status"] = {"loadBalancer": {}}


def _secret_defaults(resource, obj: dict) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
    for k, v in (obj.get("data") or {}).items():
        try:
            base64.b64decode(v, validate=True)
        except (ValueError, TypeError):
            raise invalid(resource, obj["metadata"].get("name", ""), [
                ("FieldValueInvalid", f"data[{k}]", "Invalid value: illegal base64 data")])


def _crd_defaults(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    for v in spec.get("versions") or []:
        v.setdefault("served", True)
    stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    if old is not None:
        status = obj.setdefault("status", {})
        status["acceptedNames"] = copy.deepcopy(names)
        status["storedVersions"] = sorted(set(status.get("storedVersions") or []) | set(stored))
        return
    obj["status"] = {
        "acceptedNames": copy.deepcopy(names),
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now()},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now()},
        ],
    }
