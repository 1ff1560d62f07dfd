"""The route set: every route's attachment outcome, kept up to date by difference.

Attaching a route (``httproute.attach_route``) decides its rules, its status,
the listeners that count and serve it, and the clusters its backendRefs
resolve to. All of that is an ``Outcome``: data computed from the route and
the world around it (its "context": Gateways, classes, Services, grants,
namespaces, translate's arguments), applied to the translation in one place.

``RouteSet`` keeps the outcomes of the last translation and their sums: the
route keys each listener counts, the hostnames each listener serves per
route, the route statuses and notes, the clusters wanted, the routes served.
While the context is unchanged, a translation computes outcomes only for
routes that are new or changed (a route object the cache replaced), takes
the outcomes of deleted and replaced routes out of the sums, puts the new
ones in, and copies the sums into the fresh listener states: a one-route
change costs one outcome plus a few copies of C-level containers, not a
Python-level pass over 5000 routes (issue 5's benchmark). When the context
changes, every outcome is computed again and the sums are rebuilt.

What must stay true:
* The sums are exactly what applying every current outcome to empty sums
  gives (tests/control/test_translate_memo.py compares with and without a
  memo over random edit sequences).
* Outcomes and the statuses in them are never changed once made: they are
  shared by successive reports.
* (Gateway key, listener index) names a listener only within one context;
  the sums are rebuilt whenever the context changes.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from control import ir
from control.status import ObjectStatus, StatusReport
from control.objects import resources as r
from control.translate.backends import BackendResolver, ClusterSpec, Problem
from control.translate.gateway import GatewayState
from control.translate.httproute import Effects, attach_route
from control.objects.resources import ObjectKey, created_epoch
from control.translate.store import Store

RulesOf = Callable[[Any, BackendResolver], "tuple[list[ir.Rule], list[str], list[Problem]]"]
_Listener = tuple[ObjectKey, int]  # (Gateway key, index in its listeners)


@dataclass(frozen=True)
class Outcome:
    """All that attaching one route decides."""

    route: Any  # r.HTTPRoute | r.FluxGateRoute: the object it was computed from
    ir: ir.Route
    served: bool
    report: StatusReport  # the route's own status and notes
    counts: tuple[_Listener, ...]  # listeners whose attachedRoutes count it
    attachments: tuple[tuple[ObjectKey, int, tuple[str, ...]], ...]  # ... and hostnames served
    clusters: tuple[tuple[str, ClusterSpec], ...]  # what its backendRefs resolved to


class RouteSet:
    """Outcomes by route key and their sums (see the module docstring)."""

    def __init__(self) -> None:
        self.context: tuple | None = None
        self.fresh_context = True
        self._reset()
        self.reused = self.computed = 0
        self.fresh: list[ObjectKey] = []  # routes whose outcome the last call computed

    def _reset(self) -> None:
        self.outcomes: dict[ObjectKey, Outcome] = {}
        self._counted: dict[_Listener, set[ObjectKey]] = {}
        self._attached: dict[_Listener, dict[str, ir.Attachment]] = {}
        self._statuses: dict[tuple[str, str, str], ObjectStatus] = {}
        self._notes: Counter[str] = Counter()
        self._clusters: Counter[str] = Counter()  # name → outcomes wanting it
        self._specs: dict[str, ClusterSpec] = {}  # one per name within a context
        self._served: dict[str, ir.Route] = {}
        self._used: Counter[str] = Counter()  # clusters served routes send to (mirrors too)
        # Sorted views of _served and of each listener's _attached, kept until
        # they change: at 100k routes each sort costs ~50 ms per translation.
        self._served_sorted: tuple[ir.Route, ...] | None = None
        self._attached_sorted: dict[_Listener, tuple[ir.Attachment, ...]] = {}

    def attach_all(
        self,
        kinds: Iterable[tuple[dict[ObjectKey, Any], RulesOf]],
        context: tuple,
        store: Store,
        gateways: dict[ObjectKey, GatewayState],
        resolver: BackendResolver,
        report: StatusReport,
        controller_name: str,
    ) -> tuple[ir.Route, ...]:
        """Attach every route of ``kinds`` ((routes by key, rules_of) per kind), recording
        status in ``report`` and attachments in ``gateways``' listeners; the
        routes served by at least one listener, sorted by ref."""
        # Identity short-cuts the comparison of every unchanged object.
        self.fresh_context = context != self.context
        if self.fresh_context:
            self.context = context
            self._reset()
        previous = self.outcomes
        self.computed = 0
        self.fresh = []
        replaced = store.replaced_routes
        if replaced is not None and previous and not self.fresh_context:
            # Only these routes were replaced in place (Store.replaced): every
            # other route is the very object its outcome was computed from.
            current = dict(previous)
            for key in replaced:
                for routes, rules_of in kinds:
                    route = routes.get(key)
                    if route is not None:
                        self._attach(route, rules_of, previous.get(key), current, store, gateways,
                                     resolver, controller_name)
                        break
        else:
            current = {}
            for routes, rules_of in kinds:
                for route in routes.values():
                    key = route.key
                    old = previous.get(key)
                    if old is not None and old.route is route:
                        current[key] = old
                        continue
                    self._attach(route, rules_of, old, current, store, gateways, resolver,
                                 controller_name)
        if len(current) != len(previous) or self.computed:
            for key, old in previous.items():
                if key not in current:
                    self._take(old)  # deleted
        self.outcomes = current
        self.reused = len(current) - self.computed
        self._copy_into(gateways, resolver, report)
        if self._served_sorted is None:
            self._served_sorted = tuple(sorted(self._served.values(), key=_REF))
        return self._served_sorted

    def _attach(self, route, rules_of: RulesOf, old: "Outcome | None", current: dict,
                store: Store, gateways: dict[ObjectKey, GatewayState], resolver: BackendResolver,
                controller_name: str) -> None:
        if old is not None and old.route is route:
            return
        new = _outcome(route, rules_of, store, gateways, resolver, controller_name)
        self.computed += 1
        self.fresh.append(route.key)
        if old is not None:
            self._take(old)
        self._put(new)
        current[route.key] = new

    # --- the sums -----------------------------------------------------------------

    def _put(self, o: Outcome) -> None:
        for name, spec in o.clusters:
            self._clusters[name] += 1
            self._specs[name] = spec
        for listener in o.counts:
            self._counted.setdefault(listener, set()).add(o.route.key)
        ref = o.ir.ref
        for gw_key, index, hosts in o.attachments:
            attached = self._attached.setdefault((gw_key, index), {})
            known = attached.get(ref)
            if known is not None:  # one route reaching a listener through two parentRefs
                hosts = known.hostnames + tuple(h for h in hosts if h not in known.hostnames)
            attached[ref] = ir.Attachment(route=ref, hostnames=hosts)
            self._attached_sorted.pop((gw_key, index), None)
        self._statuses.update(o.report.by_key())
        for note in o.report.notes:
            self._notes[note] += 1
        if o.served:
            self._served[ref] = o.ir
            self._served_sorted = None
            for name in cluster_names(o.ir):
                self._used[name] += 1

    def _take(self, o: Outcome) -> None:
        for name, _ in o.clusters:
            self._clusters[name] -= 1
            if not self._clusters[name]:
                del self._clusters[name], self._specs[name]
        for listener in o.counts:
            self._counted[listener].discard(o.route.key)
        ref = o.ir.ref
        for gw_key, index, _ in o.attachments:
            self._attached[(gw_key, index)].pop(ref, None)
            self._attached_sorted.pop((gw_key, index), None)
        for key in o.report.by_key():
            self._statuses.pop(key, None)
        for note in o.report.notes:
            self._notes[note] -= 1
            if not self._notes[note]:
                del self._notes[note]
        if self._served.pop(ref, None) is not None:
            self._served_sorted = None
            for name in cluster_names(o.ir):
                self._used[name] -= 1
                if not self._used[name]:
                    del self._used[name]

    def _copy_into(self, gateways: dict[ObjectKey, GatewayState], resolver: BackendResolver,
                   report: StatusReport) -> None:
        """The sums into this translation's fresh states (copies where they change later)."""
        for (gw_key, index), keys in self._counted.items():
            # attachedRoutes counts each route once, however many parentRefs pick it.
            gateways[gw_key].listeners[index].status.attached_routes = len(keys)
        for listener, attached in self._attached.items():
            gw_key, index = listener
            state = gateways[gw_key].listeners[index]
            state.attachments = dict(attached)
            done = self._attached_sorted.get(listener)
            if done is None:
                done = self._attached_sorted[listener] = tuple(
                    att for _, att in sorted(attached.items(), key=_FIRST))
            state.sorted_attachments = done
        for name, spec in self._specs.items():
            resolver.want(name, spec)
        report.adopt_objects(self._statuses)
        for note in self._notes:
            report.note(note)


    def used_clusters(self) -> set[str]:
        """The clusters the served routes send to (backends and mirrors)."""
        return set(self._used)


def cluster_names(route: ir.Route) -> list[str]:
    """Every cluster a route's rules send to: backends, and mirror targets
    (fire and forget, but served too)."""
    names = [b.cluster for rule in route.rules for b in rule.backends]
    names += [f.cluster for rule in route.rules for f in rule.filters if isinstance(f, ir.RequestMirror)]
    return names


_REF = operator.attrgetter("ref")
_FIRST = operator.itemgetter(0)


def _outcome(
    route: r.HTTPRoute | r.FluxGateRoute,
    rules_of: RulesOf,
    store: Store,
    gateways: dict[ObjectKey, GatewayState],
    resolver: BackendResolver,
    controller_name: str,
) -> Outcome:
    resolver.captured = []
    rules, dropped, problems = rules_of(route, resolver)
    route_ir = ir.Route(
        kind=route.KIND, namespace=route.namespace, name=route.name,
        created=created_epoch(route.metadata.creation_timestamp), rules=tuple(rules),
    )
    own = StatusReport()
    effects = Effects()
    served = attach_route(route, route_ir, dropped, problems, store, gateways, own,
                          controller_name, effects)
    return Outcome(route, route_ir, served, own, tuple(effects.counts),
                   tuple(effects.attachments), tuple(resolver.captured))
