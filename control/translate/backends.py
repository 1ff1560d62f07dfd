"""backendRefs: from a route's reference to a cluster of (address, port) endpoints.

Rules:

* A backendRef resolves to a cluster named ``namespace/service:port``, or it
  does not resolve and the route keeps it as ``cluster=""`` with its weight:
  its share of traffic gets a 500, and the route's ResolvedRefs condition says
  why (InvalidKind, RefNotPermitted, BackendNotFound, UnsupportedProtocol).
* Only core Services are backends for now. A reference into another namespace
  needs a ReferenceGrant in the Service's namespace (RefNotPermitted otherwise).
* A ClusterIP/NodePort/LoadBalancer Service resolves through its
  EndpointSlices (label ``kubernetes.io/service-name``): the Service port is
  found by number; a slice port is matched by the Service port's name, or taken
  when both the Service and the slice have exactly one port; a slice port
  without a number ("all ports") uses the numeric ``targetPort`` (else the
  Service port). Endpoint conditions, as kube-proxy, Envoy Gateway and
  Contour read them:
  - ``ready`` true or unset (the API: unset means ready): served;
  - not ready but ``serving`` (unset means serving) and ``terminating``: a
    pod draining during a rolling update. Used only when the Service port has
    no ready endpoint at all, so the last pods of a roll-out still take
    traffic instead of a 503; never as a new target next to ready ones;
  - anything else (not ready, not serving): left out.
  Only the first address of an endpoint is used: the API declares them
  fungible.
* A Service with no ready endpoints still resolves: a cluster with no
  endpoints, which the data plane answers with 503 (the spec's SHOULD).
* An ExternalName Service resolves to one endpoint (externalName, port) and the
  cluster rewrites the Host header to externalName.
* Resolution is memoised per translation: clusters are built once however many
  rules reference them, and (with a memo) across translations while the
  Service and its EndpointSlice objects are the same.
"""

from __future__ import annotations

from typing import NamedTuple

from control import ir
from control.objects import resources as r
from control.translate.store import Store

# appProtocols an upstream HTTP/1.1 cleartext client cannot speak (GEP-1911).
UNSUPPORTED_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "kubernetes.io/wss", "https"})


class Problem(NamedTuple):
    """Why a reference did not resolve: a ResolvedRefs reason and a message."""

    reason: str
    message: str


class ClusterSpec(NamedTuple):
    """What a cluster is built from: a Service port (endpoints from its
    EndpointSlices) or an ExternalName. Its objects are the store's own, so
    identity tells a memo whether anything changed."""

    service: r.Service
    port: r.ServicePort | None  # None: ExternalName
    number: int  # the port a backendRef named


class BackendResolver:
    """Resolves backendRefs to cluster names, as they are asked for; builds
    the clusters (endpoints) once at the end, from ``wanted``.

    Resolution reads Services and ReferenceGrants only, never EndpointSlices,
    so a route's rules do not depend on endpoints: an endpoint change rebuilds
    clusters, not routes (``translate``'s memo relies on this). ``captured``
    lists every (name, spec) resolved since it was last reset, so a memoised
    route can bring its clusters back with ``want``."""

    def __init__(self, store: Store, memo: dict | None = None) -> None:
        self._store = store
        self._wanted: dict[str, ClusterSpec] = {}
        self._memo = memo  # name -> (spec, slices, cluster), kept across translations
        self.captured: list[tuple[str, ClusterSpec]] = []

    def want(self, name: str, spec: ClusterSpec) -> None:
        self._wanted[name] = spec

    def clusters(self) -> tuple[ir.Cluster, ...]:
        """Every cluster resolved so far, sorted by name."""
        built = tuple(self._build(name, self._wanted[name]) for name in sorted(self._wanted))
        if self._memo is not None:
            for name in [n for n in self._memo if n not in self._wanted]:
                del self._memo[name]  # its Service is no longer referenced
        return built

    def resolve(self, route: r.HTTPRoute, ref: r.HTTPBackendRef) -> tuple[ir.Backend, Problem | None]:
        cluster, problem = self._cluster(route, ref)
        return ir.Backend(cluster=cluster, weight=ref.weight), problem

    def _cluster(self, route: r.HTTPRoute, ref: r.HTTPBackendRef) -> tuple[str, Problem | None]:
        if ref.group != "" or ref.kind != "Service":
            group = ref.group or "core"
            return "", Problem("InvalidKind", f"backendRef kind {group}/{ref.kind} is not supported")
        namespace = ref.namespace or route.namespace
        target = f"Service {namespace}/{ref.name}"
        if not self._store.reference_permitted(
            from_group=route.GROUP, from_kind=route.KIND, from_namespace=route.namespace,
            to_group="", to_kind="Service", to_namespace=namespace, to_name=ref.name,
        ):
            return "", Problem("RefNotPermitted",
                               f"{target} is in another namespace and no ReferenceGrant allows it")
        svc = self._store.services.get((namespace, ref.name))
        if svc is None:
            return "", Problem("BackendNotFound", f"{target} not found")
        assert ref.port is not None  # validation requires a port for Services
        name = f"{namespace}/{ref.name}:{ref.port}"
        spec = self._wanted.get(name)
        if spec is None:
            if svc.spec.type == "ExternalName":
                spec = ClusterSpec(svc, None, ref.port)
            else:
                port = next((p for p in svc.ports if p.port == ref.port), None)
                if port is None:
                    return "", Problem("BackendNotFound", f"{target} has no port {ref.port}")
                if port.protocol != "TCP":
                    return "", Problem("UnsupportedProtocol", f"{target} port {ref.port} is {port.protocol}")
                if port.app_protocol in UNSUPPORTED_APP_PROTOCOLS:
                    return "", Problem("UnsupportedProtocol",
                                       f"{target} port {ref.port} has appProtocol {port.app_protocol}")
                spec = ClusterSpec(svc, port, ref.port)
            self._wanted[name] = spec
        self.captured.append((name, spec))
        return name, None

    def _build(self, name: str, spec: ClusterSpec) -> ir.Cluster:
        svc = spec.service
        if spec.port is None:
            host = svc.spec.external_name.rstrip(".")
            return ir.Cluster(name=name, endpoints=(ir.Endpoint(host, spec.number),), host_rewrite=host)
        slices = self._store.endpoint_slices(svc.namespace, svc.name)
        if self._memo is not None:
            # Same Service, port and slice objects: the same endpoints.
            hit = self._memo.get(name)
            if hit is not None and hit[0] == spec and len(hit[1]) == len(slices) \
                    and all(a is b for a, b in zip(hit[1], slices)):
                return hit[2]
        cluster = ir.Cluster(name=name, endpoints=self._endpoints(svc, spec.port, slices))
        if self._memo is not None:
            self._memo[name] = (spec, tuple(slices), cluster)
        return cluster

    def _endpoints(self, svc: r.Service, port: r.ServicePort,
                   slices: list[r.EndpointSlice]) -> tuple[ir.Endpoint, ...]:
        ready: set[ir.Endpoint] = set()
        draining: set[ir.Endpoint] = set()  # serving and terminating: the fallback
        for eps in slices:
            number = _slice_port(eps, svc, port)
            if number is None:
                continue
            for ep in eps.endpoints or ():
                state = endpoint_state(ep.conditions)
                if state == READY:
                    ready.add(ir.Endpoint(ep.addresses[0], number))
                elif state == DRAINING:
                    draining.add(ir.Endpoint(ep.addresses[0], number))
        return tuple(sorted(ready or draining))


READY, DRAINING, UNUSABLE = "ready", "draining", "unusable"


def endpoint_state(c: r.EndpointConditions) -> str:
    """READY (served), DRAINING (served only when nothing is ready) or UNUSABLE."""
    if c.ready is not False:
        return READY
    if c.serving is not False and c.terminating is True:
        return DRAINING
    return UNUSABLE


def _slice_port(eps: r.EndpointSlice, svc: r.Service, port: r.ServicePort) -> int | None:
    """The port number ``eps`` serves ``port`` on, or None if it does not serve it."""
    ports = eps.ports or ()
    chosen = next((p for p in ports if (p.name or "") == port.name), None)
    if chosen is None and len(ports) == 1 and len(svc.ports) == 1:
        chosen = ports[0]
    if chosen is None or chosen.protocol != "TCP":
        return None
    if chosen.port is not None:
        return chosen.port
    return port.target_port if isinstance(port.target_port, int) else port.port
