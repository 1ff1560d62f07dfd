"""The one kinds table: every Kubernetes kind FluxGate knows, and what each part does with it.

Every other module that needs a list of kinds reads it from here: what the
cache parses (``validation``), what the Kubernetes source lists and watches,
whose status the controller writes, what the admission webhook checks, and
which groups are FluxGate's or Gateway API's (an object of those groups whose
kind is not served is an error in ``fluxgate validate``, not a silent skip).
Adding a kind is one row here, its typed resource (``resources.py``) and the
translator that reads it.

Rules:
* ``version`` is the version the Kubernetes source lists and the status
  writer writes; ``versions`` are every version accepted from files and by
  the webhook (older served versions of Gateway API kinds).
* ``resource`` is None for a kind that is watched but not parsed: a Secret
  is read only for what references it until TLS termination parses it.
* ``translator`` names the module of ``control/translate`` that reads the
  kind (tests check each exists), so a reader finds where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

from control.objects import resources as r

GATEWAY_GROUP = r.GATEWAY_GROUP
FLUXGATE_GROUP = r.FLUXGATE_GROUP
# Groups whose kinds FluxGate implements: an unserved kind of these groups is
# a configuration FluxGate would silently not enforce (a policy, a TLSRoute).
OWN_GROUPS = (GATEWAY_GROUP, FLUXGATE_GROUP)
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str  # "" = core
    version: str  # listed, watched and written in this version
    plural: str
    namespaced: bool
    resource: type[r.Resource] | None  # the typed resource; None: not parsed
    translator: str  # the control/translate module that reads it
    versions: tuple[str, ...] = ()  # every accepted version (default: ``version``)
    watched: bool = True  # the Kubernetes source lists and watches it
    status: bool = False  # the controller writes its status
    webhook: bool = False  # the admission webhook checks it

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_versions(self) -> tuple[str, ...]:
        """Every apiVersion accepted for this kind, the listed one first."""
        versions = self.versions or (self.version,)
        return tuple(f"{self.group}/{v}" if self.group else v for v in versions)


KINDS: tuple[Kind, ...] = (
    Kind("GatewayClass", GATEWAY_GROUP, "v1", "gatewayclasses", False, r.GatewayClass, "gateway",
         versions=("v1", "v1beta1"), status=True, webhook=True),
    Kind("Gateway", GATEWAY_GROUP, "v1", "gateways", True, r.Gateway, "gateway",
         versions=("v1", "v1beta1"), status=True, webhook=True),
    Kind("HTTPRoute", GATEWAY_GROUP, "v1", "httproutes", True, r.HTTPRoute, "httproute",
         versions=("v1", "v1beta1"), status=True, webhook=True),
    Kind("FluxGateRoute", FLUXGATE_GROUP, "v1alpha3", "fluxgateroutes", True, r.FluxGateRoute,
         "fluxgateroute", status=True, webhook=True),
    Kind("ReferenceGrant", GATEWAY_GROUP, "v1beta1", "referencegrants", True, r.ReferenceGrant,
         "backends", versions=("v1beta1", "v1"), webhook=True),
    Kind("Service", "", "v1", "services", True, r.Service, "backends"),
    Kind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True, r.EndpointSlice, "backends"),
    Kind("Ingress", "networking.k8s.io", "v1", "ingresses", True, r.Ingress, "ingress",
         status=True, webhook=True),
    Kind("IngressClass", "networking.k8s.io", "v1", "ingressclasses", False, r.IngressClass, "ingress",
         webhook=True),
    Kind("Namespace", "", "v1", "namespaces", False, r.Namespace, "gateway"),
    Kind("Secret", "", "v1", "secrets", True, None, "gateway"),
)

BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
# (apiVersion, kind) → Kind, for every accepted version.
BY_API_VERSION: dict[tuple[str, str], Kind] = {
    (api_version, k.kind): k for k in KINDS for api_version in k.api_versions
}
# What the cache parses: (apiVersion, kind) → typed resource.
PARSED: dict[tuple[str, str], type[r.Resource]] = {
    key: k.resource for key, k in BY_API_VERSION.items() if k.resource is not None
}
CLUSTER_SCOPED = frozenset(k.kind for k in KINDS if not k.namespaced)
STATUS_KINDS = tuple(k for k in KINDS if k.status)
WEBHOOK_KINDS = frozenset(k.kind for k in KINDS if k.webhook)


def group_of(api_version: str) -> str:
    """"gateway.networking.k8s.io/v1" → "gateway.networking.k8s.io"; "v1" → ""."""
    return api_version.rpartition("/")[0]


def is_own_group(api_version: str) -> bool:
    """The object belongs to FluxGate's or Gateway API's groups."""
    return group_of(api_version) in OWN_GROUPS
