"""The kinds a fresh server knows: built-ins, and the CRDs a FluxGate cluster has.

Built-in kinds are Resources with the per-kind rules of their real registry
strategy (which keep ``metadata.generation``, which create on PUT, which answer
DELETE with the object). Gateway API and FluxGate kinds are real
CustomResourceDefinition objects, created through the API at start, so they
are listed, watched, replaced and deleted like any test-installed CRD.

The Gateway API schemas here are partial: they keep every unknown field
(``x-kubernetes-preserve-unknown-fields``) and carry only the defaults and
status defaults of the upstream v1 CRDs that a controller sees (parentRef
group/kind, the "/" PathPrefix match, backendRef kind/weight, listener
allowedRoutes, the "Waiting for controller" status conditions). FluxGate kinds
keep everything; install deploy/crds/*.yaml with ``apply_yaml`` for the real
schema.
"""

from __future__ import annotations

from .registry import DNS_1035, DNS_LABEL, Resource

BUILTINS = (
    Resource("", ("v1",), "namespaces", "namespace", "Namespace", False, status=True,
             short_names=("ns",), return_deleted=True, name_rule=DNS_LABEL,
             selectable_fields=("status.phase",),
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    Resource("", ("v1",), "services", "service", "Service", True, status=True,
             short_names=("svc",), categories=("all",), return_deleted=True,
             name_rule=DNS_1035, selectable_fields=("spec.clusterIP", "spec.type")),
    Resource("", ("v1",), "endpoints", "endpoints", "Endpoints", True, short_names=("ep",),
             create_on_update=True),
    Resource("", ("v1",), "secrets", "secret", "Secret", True, selectable_fields=("type",)),
    Resource("", ("v1",), "configmaps", "configmap", "ConfigMap", True, short_names=("cm",)),
    Resource("", ("v1",), "events", "event", "Event", True, short_names=("ev",),
             create_on_update=False,
             selectable_fields=("involvedObject.kind", "involvedObject.namespace",
                                "involvedObject.name", "involvedObject.uid",
                                "involvedObject.apiVersion", "involvedObject.resourceVersion",
                                "involvedObject.fieldPath", "reason", "reportingComponent",
                                "source", "type")),
    Resource("discovery.k8s.io", ("v1",), "endpointslices", "endpointslice", "EndpointSlice",
             True, generation=True),
    Resource("networking.k8s.io", ("v1",), "ingresses", "ingress", "Ingress", True,
             status=True, short_names=("ing",), generation=True),
    Resource("networking.k8s.io", ("v1",), "ingressclasses", "ingressclass", "IngressClass",
             False, generation=True),
    Resource("coordination.k8s.io", ("v1",), "leases", "lease", "Lease", True,
             create_on_update=True),
    Resource("apiextensions.k8s.io", ("v1",), "customresourcedefinitions",
             "customresourcedefinition", "CustomResourceDefinition", False, status=True,
             short_names=("crd", "crds"), generation=True, return_deleted=True),
)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_PENDING = {"lastTransitionTime": "1970-01-01T00:00:00Z", "message": "Waiting for controller",
            "reason": "Pending", "status": "Unknown"}


def _obj(default=None, **properties) -> dict:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if properties:
        schema["properties"] = properties
    if default is not None:
        schema["default"] = default
    return schema


def _arr(items: dict, default=None) -> dict:
    schema = {"type": "array", "items": items}
    if default is not None:
        schema["default"] = default
    return schema


def _str(default=None) -> dict:
    return {"type": "string"} if default is None else {"type": "string", "default": default}


def _status_with(*types: str) -> dict:
    return _obj(default={"conditions": [dict(_PENDING, type=t) for t in types]})


_ROOT_PATH = {"type": "PathPrefix", "value": "/"}
_PARENT_REF = _obj(group=_str("gateway.networking.k8s.io"), kind=_str("Gateway"))
_BACKEND_REF = _obj(group=_str(""), kind=_str("Service"),
                    weight={"type": "integer", "format": "int32", "default": 1})
_HTTP_MATCH = _obj(
    path=_obj(default=dict(_ROOT_PATH), type=_str("PathPrefix"), value=_str("/")),
    headers=_arr(_obj(type=_str("Exact"))),
    queryParams=_arr(_obj(type=_str("Exact"))),
)
_HTTP_RULE = _obj(matches=_arr(_HTTP_MATCH, default=[{"path": dict(_ROOT_PATH)}]),
                  backendRefs=_arr(_BACKEND_REF))

GATEWAY_API_SCHEMAS = {
    "GatewayClass": _obj(spec=_obj(), status=_status_with("Accepted")),
    "Gateway": _obj(
        spec=_obj(listeners=_arr(_obj(
            allowedRoutes=_obj(
                default={"namespaces": {"from": "Same"}},
                namespaces=_obj(default={"from": "Same"}, **{"from": _str("Same")})),
            tls=_obj(mode=_str("Terminate"))))),
        status=_status_with("Accepted", "Programmed")),
    "HTTPRoute": _obj(spec=_obj(
        parentRefs=_arr(_PARENT_REF),
        rules=_arr(_HTTP_RULE, default=[{"matches": [{"path": dict(_ROOT_PATH)}]}]))),
    "ReferenceGrant": _obj(spec=_obj()),
}


def crd(group: str, kind: str, plural: str, versions: tuple[str, ...], namespaced: bool,
        status: bool = True, schema: dict | None = None, short_names: tuple[str, ...] = (),
        categories: tuple[str, ...] = ()) -> dict:
    """A CustomResourceDefinition object (first version is the storage version)."""
    schema = schema or _obj()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind,
                      "listKind": kind + "List", "shortNames": list(short_names),
                      "categories": list(categories)},
            "versions": [
                {"name": v, "served": True, "storage": i == 0,
                 "schema": {"openAPIV3Schema": schema},
                 "subresources": {"status": {}} if status else {}}
                for i, v in enumerate(versions)],
        },
    }


GATEWAY_GROUP = "gateway.networking.k8s.io"
FLUXGATE_GROUP = "fluxgate.io"


def initial_crds() -> list[dict]:
    s = GATEWAY_API_SCHEMAS
    cats = ("gateway-api",)
    return [
        crd(GATEWAY_GROUP, "GatewayClass", "gatewayclasses", ("v1", "v1beta1"), False,
            schema=s["GatewayClass"], short_names=("gc",), categories=cats),
        crd(GATEWAY_GROUP, "Gateway", "gateways", ("v1", "v1beta1"), True,
            schema=s["Gateway"], short_names=("gtw",), categories=cats),
        crd(GATEWAY_GROUP, "HTTPRoute", "httproutes", ("v1", "v1beta1"), True,
            schema=s["HTTPRoute"], categories=cats),
        crd(GATEWAY_GROUP, "ReferenceGrant", "referencegrants", ("v1beta1",), True,
            status=False, schema=s["ReferenceGrant"], short_names=("refgrant",),
            categories=cats),
        crd(FLUXGATE_GROUP, "FluxGateRoute", "fluxgateroutes", ("v1alpha3",), True,
            short_names=("fgr",), categories=("fluxgate", "gateway-api")),
        crd(FLUXGATE_GROUP, "FluxGatePolicy", "fluxgatepolicies", ("v1alpha3",), True,
            categories=("fluxgate",)),
        crd(FLUXGATE_GROUP, "FluxGateAuth", "fluxgateauths", ("v1alpha3",), True,
            categories=("fluxgate",)),
    ]
