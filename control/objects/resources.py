"""Typed Kubernetes resources: the vocabulary translate() reads.

Rules:

* One frozen msgspec Struct per kind, declaring only the fields FluxGate
  reads. Everything else (``status``, ``managedFields``, annotations, fields of
  later API versions) is dropped on conversion. Two versions of an object that
  differ only in dropped fields compare equal, which is how the cache knows a
  change does not matter.
  Ingress and IngressClass keep the annotations translate reads
  (``read_annotation``), and only those.
* Field names are the Python spelling of the API's camelCase (``rename``), so
  ``msgspec.convert`` both types and names the input, and its errors name the
  field as the user wrote it (``spec.listeners[0].port``).
* Defaults are the API's defaults (``PathPrefix`` "/", weight 1, ``from: Same``),
  so translate never re-implements defaulting. Structural checks that a CRD
  schema expresses as CEL rules live in ``validation.py``.
* ``metadata.namespace`` is already defaulted ("default", or "" for
  cluster-scoped kinds) by the time a resource exists.

To support a new kind: add its Struct here and its row to the kinds table
(``kinds.py``).
"""

from __future__ import annotations

import datetime
import functools
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Optional

import msgspec

GATEWAY_GROUP = "gateway.networking.k8s.io"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_S = dict(frozen=True, rename="camel", forbid_unknown_fields=False)

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Weight = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
HTTPMethod = Literal[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"
]


class ObjectKey(NamedTuple):
    """The identity of an object; ``namespace`` is "" for cluster-scoped kinds."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"


def key_order(key: tuple[str, ...]) -> str:
    """A sort key in the order of the key's tuple, as one string (NUL-separated;
    names never hold NUL): sorting 100k strings holds the GIL ~25 ms, 100k
    tuples of strings ~200 ms (a stall of the admin server's loop)."""
    return "\0".join(key)


class ObjectMeta(msgspec.Struct, **_S):
    name: str
    namespace: str = ""
    labels: dict[str, str] = {}
    creation_timestamp: Optional[datetime.datetime] = None
    generation: int = 0


def created_epoch(ts: datetime.datetime | None) -> float | None:
    """creationTimestamp as epoch seconds (route precedence); None when absent."""
    if ts is None:
        return None
    if ts.tzinfo is None:  # YAML timestamps without a zone are UTC in Kubernetes
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    return ts.timestamp()


class Resource(msgspec.Struct, dict=True, **_S):
    """Base of every typed object. (``dict=True``: room for ``key``, computed
    once; translation asks for it tens of thousands of times per change.)"""

    KIND: ClassVar[str] = ""
    GROUP: ClassVar[str] = ""  # the API group ("" = core); ReferenceGrants and route kinds name it

    metadata: ObjectMeta

    @functools.cached_property
    def key(self) -> ObjectKey:
        return ObjectKey(self.KIND, self.metadata.namespace, self.metadata.name)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


# --- shared ------------------------------------------------------------------------


class LabelSelectorRequirement(msgspec.Struct, **_S):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


class LabelSelector(msgspec.Struct, **_S):
    match_labels: dict[str, str] = {}
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


# --- GatewayClass ----------------------------------------------------------------


class GatewayClassSpec(msgspec.Struct, **_S):
    controller_name: str
    parameters_ref: Optional[dict[str, Any]] = None
    description: str = ""


class GatewayClass(Resource, **_S):
    KIND: ClassVar[str] = "GatewayClass"
    spec: GatewayClassSpec


# --- Gateway -----------------------------------------------------------------------


class RouteGroupKind(msgspec.Struct, **_S):
    kind: str
    group: str = GATEWAY_GROUP


class RouteNamespaces(msgspec.Struct, **_S):
    from_: Literal["All", "Same", "Selector"] = "Same"
    selector: Optional[LabelSelector] = None


class AllowedRoutes(msgspec.Struct, **_S):
    namespaces: RouteNamespaces = RouteNamespaces()
    kinds: tuple[RouteGroupKind, ...] = ()


class Listener(msgspec.Struct, **_S):
    name: str
    port: Port
    protocol: str
    hostname: Optional[str] = None
    tls: Optional[dict[str, Any]] = None
    allowed_routes: AllowedRoutes = AllowedRoutes()


class GatewayAddress(msgspec.Struct, **_S):
    value: str
    type: str = "IPAddress"


class GatewaySpec(msgspec.Struct, **_S):
    gateway_class_name: str
    listeners: tuple[Listener, ...]
    addresses: tuple[GatewayAddress, ...] = ()


class Gateway(Resource, **_S):
    KIND: ClassVar[str] = "Gateway"
    spec: GatewaySpec


# --- HTTPRoute ---------------------------------------------------------------------


class ParentReference(msgspec.Struct, **_S):
    name: str
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    namespace: Optional[str] = None
    section_name: Optional[str] = None
    port: Optional[Port] = None


class HTTPPathMatch(msgspec.Struct, **_S):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"


class HTTPHeaderMatch(msgspec.Struct, **_S):
    name: str
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


class HTTPQueryParamMatch(msgspec.Struct, **_S):
    name: str
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


class HTTPRouteMatch(msgspec.Struct, **_S):
    path: HTTPPathMatch = HTTPPathMatch()
    headers: tuple[HTTPHeaderMatch, ...] = ()
    query_params: tuple[HTTPQueryParamMatch, ...] = ()
    method: Optional[HTTPMethod] = None


class HTTPRouteFilter(msgspec.Struct, **_S):
    """A filter, kept as written: its type plus the member for that type."""

    type: str
    request_header_modifier: Optional[dict[str, Any]] = None
    response_header_modifier: Optional[dict[str, Any]] = None
    request_mirror: Optional[dict[str, Any]] = None
    request_redirect: Optional[dict[str, Any]] = None
    url_rewrite: Optional[dict[str, Any]] = None
    cors: Optional[dict[str, Any]] = None
    extension_ref: Optional[dict[str, Any]] = None


class HTTPBackendRef(msgspec.Struct, **_S):
    name: str
    group: str = ""
    kind: str = "Service"
    namespace: Optional[str] = None
    port: Optional[Port] = None
    weight: Weight = 1
    filters: tuple[HTTPRouteFilter, ...] = ()


class HTTPRouteTimeouts(msgspec.Struct, **_S):
    request: Optional[str] = None
    backend_request: Optional[str] = None


class HTTPRouteRetry(msgspec.Struct, **_S):
    """GEP-1731 (experimental channel): retry on these statuses, at most ``attempts`` times."""

    codes: tuple[Annotated[int, msgspec.Meta(ge=400, le=599)], ...] = ()
    attempts: Optional[Annotated[int, msgspec.Meta(ge=0)]] = None
    backoff: Optional[str] = None


class HTTPRouteRule(msgspec.Struct, **_S):
    name: Optional[str] = None
    matches: tuple[HTTPRouteMatch, ...] = ()
    filters: tuple[HTTPRouteFilter, ...] = ()
    backend_refs: tuple[HTTPBackendRef, ...] = ()
    timeouts: Optional[HTTPRouteTimeouts] = None
    retry: Optional[HTTPRouteRetry] = None


class HTTPRouteSpec(msgspec.Struct, **_S):
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    # The CRD's default: one rule matching every path, with no backend (500).
    rules: tuple[HTTPRouteRule, ...] = (HTTPRouteRule(),)


class HTTPRoute(Resource, **_S):
    KIND: ClassVar[str] = "HTTPRoute"
    GROUP: ClassVar[str] = GATEWAY_GROUP
    spec: HTTPRouteSpec = HTTPRouteSpec()


# --- ReferenceGrant --------------------------------------------------------------


class ReferenceGrantFrom(msgspec.Struct, **_S):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(msgspec.Struct, **_S):
    group: str
    kind: str
    name: Optional[str] = None


class ReferenceGrantSpec(msgspec.Struct, **_S):
    from_: tuple[ReferenceGrantFrom, ...]
    to: tuple[ReferenceGrantTo, ...]


class ReferenceGrant(Resource, **_S):
    KIND: ClassVar[str] = "ReferenceGrant"
    spec: ReferenceGrantSpec


# --- core: Namespace, Service, EndpointSlice -------------------------------------


class Namespace(Resource, **_S):
    KIND: ClassVar[str] = "Namespace"


class ServicePort(msgspec.Struct, **_S):
    port: Port
    name: str = ""
    protocol: str = "TCP"
    target_port: Optional[int | str] = None
    app_protocol: Optional[str] = None


class ServiceSpec(msgspec.Struct, **_S):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    ports: Optional[tuple[ServicePort, ...]] = None
    external_name: str = ""


class Service(Resource, **_S):
    KIND: ClassVar[str] = "Service"
    spec: ServiceSpec = ServiceSpec()

    @property
    def ports(self) -> tuple[ServicePort, ...]:
        return self.spec.ports or ()


class EndpointConditions(msgspec.Struct, **_S):
    ready: Optional[bool] = None
    serving: Optional[bool] = None
    terminating: Optional[bool] = None


class SliceEndpoint(msgspec.Struct, **_S):
    addresses: tuple[str, ...]
    conditions: EndpointConditions = EndpointConditions()


class EndpointPort(msgspec.Struct, **_S):
    name: Optional[str] = None
    port: Optional[Port] = None
    protocol: str = "TCP"
    app_protocol: Optional[str] = None


class EndpointSlice(Resource, **_S):
    KIND: ClassVar[str] = "EndpointSlice"
    address_type: Literal["IPv4", "IPv6", "FQDN"]
    # The API server writes ``null`` for an empty list here.
    endpoints: Optional[tuple[SliceEndpoint, ...]] = None
    ports: Optional[tuple[EndpointPort, ...]] = None

    @property
    def service_name(self) -> str:
        return self.metadata.labels.get(SERVICE_NAME_LABEL, "")


# --- Ingress, IngressClass (networking.k8s.io/v1) ----------------------------------

# The annotations translate reads. All others are dropped on conversion (like any
# field FluxGate does not read), so an unrelated annotation change is no change.
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
FLUXGATE_ANNOTATION_PREFIX = "fluxgate.io/"


def read_annotation(name: str) -> bool:
    """Whether translate reads the annotation ``name`` (so conversion keeps it)."""
    return (name in (INGRESS_CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION)
            or name.startswith(FLUXGATE_ANNOTATION_PREFIX))


class AnnotatedMeta(ObjectMeta, **_S):
    """ObjectMeta plus the annotations FluxGate reads (see ``read_annotation``)."""

    annotations: Optional[dict[str, str]] = None  # {} once converted

    def __post_init__(self) -> None:
        kept = {k: v for k, v in (self.annotations or {}).items() if read_annotation(k)}
        msgspec.structs.force_setattr(self, "annotations", kept)


class TypedLocalObjectReference(msgspec.Struct, **_S):
    kind: str = ""
    name: str = ""
    api_group: Optional[str] = None


class ServiceBackendPort(msgspec.Struct, **_S):
    name: str = ""
    number: int = 0  # 0 = unset, as the API treats it


class IngressServiceBackend(msgspec.Struct, **_S):
    name: str
    port: ServiceBackendPort = ServiceBackendPort()


class IngressBackend(msgspec.Struct, **_S):
    service: Optional[IngressServiceBackend] = None
    resource: Optional[TypedLocalObjectReference] = None


class HTTPIngressPath(msgspec.Struct, **_S):
    backend: IngressBackend
    # Required by the API; None so that its absence is reported the API's way.
    path_type: Optional[Literal["Exact", "Prefix", "ImplementationSpecific"]] = None
    path: str = ""


class HTTPIngressRuleValue(msgspec.Struct, **_S):
    paths: Optional[tuple[HTTPIngressPath, ...]] = None


class IngressRule(msgspec.Struct, **_S):
    host: str = ""
    http: Optional[HTTPIngressRuleValue] = None


class IngressTLS(msgspec.Struct, **_S):
    hosts: Optional[tuple[str, ...]] = None
    secret_name: str = ""


class IngressSpec(msgspec.Struct, **_S):
    ingress_class_name: Optional[str] = None
    default_backend: Optional[IngressBackend] = None
    tls: Optional[tuple[IngressTLS, ...]] = None
    rules: Optional[tuple[IngressRule, ...]] = None


class Ingress(Resource, **_S):
    KIND: ClassVar[str] = "Ingress"
    GROUP: ClassVar[str] = "networking.k8s.io"
    metadata: AnnotatedMeta
    spec: IngressSpec = IngressSpec()

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.annotations or {}


class IngressClassParametersReference(msgspec.Struct, **_S):
    kind: str = ""
    name: str = ""
    api_group: Optional[str] = None
    scope: Literal["Cluster", "Namespace"] = "Cluster"  # the API's default
    namespace: Optional[str] = None


class IngressClassSpec(msgspec.Struct, **_S):
    controller: str = ""
    parameters: Optional[IngressClassParametersReference] = None


class IngressClass(Resource, **_S):
    KIND: ClassVar[str] = "IngressClass"
    GROUP: ClassVar[str] = "networking.k8s.io"
    metadata: AnnotatedMeta
    spec: IngressClassSpec = IngressClassSpec()

    @property
    def is_default(self) -> bool:
        return (self.metadata.annotations or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"


# --- FluxGateRoute (fluxgate.io/v1alpha3) --------------------------------------------

FLUXGATE_GROUP = "fluxgate.io"
RETRY_ON = ("connect-failure", "reset", "5xx", "gateway-error", "retriable-4xx")


class HeaderValue(msgspec.Struct, **_S):
    """A request header to set; ``value`` may hold ``%{...}`` placeholders."""

    name: str
    value: str


class CanaryHeader(msgspec.Struct, **_S):
    name: str
    value: Optional[str] = None  # None: any value (the header is present)


class CanaryCookie(msgspec.Struct, **_S):
    name: str
    value: str


class Canary(msgspec.Struct, **_S):
    backend_refs: tuple[HTTPBackendRef, ...]
    weight: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0  # percent of the other requests
    header: Optional[CanaryHeader] = None
    cookie: Optional[CanaryCookie] = None


class Retries(msgspec.Struct, **_S):
    attempts: Annotated[int, msgspec.Meta(ge=1, le=10)]
    retry_on: tuple[Literal["connect-failure", "reset", "5xx", "gateway-error", "retriable-4xx"], ...] = ()
    backoff: Optional[str] = None  # a Gateway API Duration between tries


class FluxGateRouteRule(HTTPRouteRule, **_S):
    """An HTTPRoute rule plus what HTTPRoute cannot say."""

    canary: Optional[Canary] = None
    request_headers: tuple[HeaderValue, ...] = ()
    retries: Optional[Retries] = None


class FluxGateRouteSpec(msgspec.Struct, **_S):
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[FluxGateRouteRule, ...] = (FluxGateRouteRule(),)


class FluxGateRoute(Resource, **_S):
    """FluxGate's own route: attaches like an HTTPRoute (see translate/fluxgateroute.py)."""

    KIND: ClassVar[str] = "FluxGateRoute"
    GROUP: ClassVar[str] = FLUXGATE_GROUP
    spec: FluxGateRouteSpec = FluxGateRouteSpec()
