"""translate(): the objects of one source → IR + status. A pure function.

Reads like a table of contents, one processor per step, each recording status
as it decides (never writing it):

1. GatewayClasses: which are ours (``gateway.accept_classes``).
2. Gateways of those classes and their listeners (``gateway.accept_gateways``),
   only this shard's when ``gateways`` names them (FLUXGATE_GATEWAYS).
3. HTTPRoutes and FluxGateRoutes: attach to listeners (``httproute.attach_route``,
   rules from ``httproute.rules`` / ``fluxgateroute.rules``), resolve backendRefs
   (``backends.BackendResolver``); ``routeset.RouteSet`` keeps the outcomes.
4. Ingresses and IngressClasses, on their own listener, merged with the
   above by compile where they share a socket (``ingress.translate_ingresses``).
5. Assemble the IR from what attached, keeping only clusters that a served
   rule references.

Invariants: the same objects (in any order) give an equal Translation; one bad
object never blocks another (it is rejected alone, with a condition); nothing
here does I/O.

A ``Memo`` passed from one call to the next makes a small change cost its own
size, not the world's (issue 5: one route edit among 5000), and never changes
the result: with or without it, the same objects give an equal Translation
(tests/control/test_translate_memo.py checks this over random edit sequences).
What it keeps: the ``RouteSet`` (routeset.py), each route's ``Outcome`` (rules,
status, listener attachments, resolved clusters) and their sums, patched by
difference while every object a route reads other than itself (its
"context": all but routes, EndpointSlices and Ingresses) is unchanged; and
each cluster, reused while its Service and EndpointSlice objects are the
same. An EndpointSlice change thus rebuilds its cluster only; a Gateway or
Service change recomputes every route.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Iterable

from control.ir import IR
from control.status import StatusReport
from control.translate import fluxgateroute, gateway, httproute, ingress
from control.translate.backends import BackendResolver
from control.objects import resources as r
from control.objects.resources import Resource
from control.translate.routeset import RouteSet, cluster_names
from control.translate.store import Store

CONTROLLER_NAME = "fluxgate.io/gateway-controller"
DEFAULT_CLASS = "fluxgate"


@dataclass(frozen=True)
class Translation:
    ir: IR
    status: StatusReport


# Kinds a route's Outcome never reads: a change to one of them alone keeps
# every other route's Outcome (EndpointSlices are read when clusters are built).
_NOT_CONTEXT = (r.HTTPRoute, r.FluxGateRoute, r.EndpointSlice, r.Ingress, r.IngressClass)


class Memo:
    """What one translate() call leaves for the next (see the module docstring)."""

    def __init__(self) -> None:
        self.routes = RouteSet()
        self.clusters: dict = {}
        self.store: tuple[tuple[Resource, ...], Store] | None = None  # the last objects, their Store


def translate(
    objects: Iterable[Resource],
    *,
    default_class: str | None = DEFAULT_CLASS,
    controller_name: str = CONTROLLER_NAME,
    ingress_controller: str = ingress.INGRESS_CONTROLLER,
    ingress_http_port: int = ingress.HTTP_PORT,
    ingress_https_port: int = ingress.HTTPS_PORT,
    gateways: Iterable[str] | None = None,
    memo: Memo | None = None,
) -> Translation:
    """Translate typed objects (``ObjectCache.objects()``) into IR and status.

    ``default_class``: a GatewayClass name that is FluxGate's even when no
    GatewayClass object defines it (file mode); None to require the object
    (Kubernetes mode). The same name is implied for an IngressClass.

    ``ingress_http_port``: the port Ingresses are served on (on the global bind
    address); ``ingress_https_port``: where their ``tls`` hosts will be.

    ``gateways``: the "namespace/name" of the Gateways this shard serves
    (FLUXGATE_GATEWAYS); any other Gateway is another shard's: ignored with a
    note, and a route's parentRef to it gets no status here, as for a Gateway
    of another controller. None: every Gateway of our classes.
    """
    objects = tuple(objects)
    store = None
    if memo is not None and memo.store is not None:
        store = memo.store[1].replaced(memo.store[0], objects)
    if store is None:
        store = Store(objects)
    if memo is not None:
        memo.store = (objects, store)
    report = StatusReport()
    shard = tuple(gateways) if gateways is not None else None
    route_set = memo.routes if memo is not None else RouteSet()
    last = route_set.context
    if store.replaced_routes is not None and last is not None and last[:3] == (
            default_class, controller_name, shard):
        context = last  # only routes were replaced: every context object is the same
    else:
        context = (default_class, controller_name, shard,
                   *(o for o in objects if not isinstance(o, _NOT_CONTEXT)))
    classes = gateway.accept_classes(
        store, report, controller_name=controller_name, default_class=default_class
    )
    gateways = gateway.accept_gateways(_shard(store, report, shard), report, classes)
    resolver = BackendResolver(store, memo.clusters if memo is not None else None)
    routes = route_set.attach_all(
        [(store.http_routes, httproute.rules), (store.fluxgate_routes, fluxgateroute.rules)],
        context, store, gateways, resolver, report, controller_name)

    listeners = tuple(
        lst.to_ir() for state in gateways.values() for lst in state.listeners if lst.usable
    )
    ingress_listeners, ingress_routes = ingress.translate_ingresses(
        store, resolver, report, listeners, routes,
        controller_name=ingress_controller, default_class=default_class,
        http_port=ingress_http_port, https_port=ingress_https_port,
    )
    listeners += ingress_listeners
    used = route_set.used_clusters()
    if ingress_routes:
        routes = tuple(sorted(routes + ingress_routes, key=operator.attrgetter("ref")))
        used.update(name for route in ingress_routes for name in cluster_names(route))
    clusters = tuple(c for c in resolver.clusters() if c.name in used)
    return Translation(IR(listeners=listeners, routes=routes, clusters=clusters), report)


def _shard(store: Store, report: StatusReport, names: Iterable[str] | None) -> Store:
    """``store`` as accept_gateways should see it: only this shard's Gateways.
    The others stay in ``store`` so that routes know them (not "not found")."""
    if names is None:
        return store
    ours = frozenset(names)
    shard = copy.copy(store)
    shard.gateways = {}
    for key, gw in store.gateways.items():
        if f"{key.namespace}/{key.name}" in ours:
            shard.gateways[key] = gw
        else:
            report.note(f"{key} ignored: not one of this shard's Gateways (FLUXGATE_GATEWAYS)")
    return shard


__all__ = ["CONTROLLER_NAME", "DEFAULT_CLASS", "Memo", "Translation", "translate"]
