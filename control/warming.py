"""Warming: a new or changed route waits, briefly, for the endpoints of its backends.

Issue 5: "a worker never serves a route before its endpoints". In Kubernetes
mode the hold-off acts at once on a change after a quiet period (holdoff.py),
so the first event of ``kubectl apply -f app.yaml`` - the HTTPRoute, say -
could be published before the Service and EndpointSlice events that follow it
by milliseconds, and the route would answer 500 (no Service yet) or 503 (no
endpoints yet) until the next publish. Envoy keeps a new cluster warming
until its endpoints arrive; this is the same idea for routes.

Rules:

* A route is cold when, since the last publish, its outcome was computed
  afresh (it is new or changed, or the world around it changed), it is
  served, and a backend with weight is unresolved (cluster "") or a cluster
  with no endpoints - and that was not already so for the same route in the
  published table. (Editing a route whose Service has no ready pods is not
  held; nor is a route whose Service scales to zero: endpoint changes are
  published as they come.)
* While a route is cold the publish waits for more events, never past
  FLUXGATE_HOLDOFF_MAX_MS after the first change; then it is published as
  it is (a Service with no ready pods answers 503, an unresolved backend
  500, as the spec asks).

Pure bookkeeping: the runner asks and acts.
"""

from __future__ import annotations

from control import ir
from control.objects.resources import ObjectKey
from control.translate.routeset import RouteSet

UNRESOLVED = ""  # the marker of a backend that resolved to no cluster


def markers(route: ir.Route, empty: set[str]) -> frozenset[str]:
    """The route's backends that could not take traffic now: clusters with no
    endpoints (by name) and unresolved backends (UNRESOLVED)."""
    return frozenset(b.cluster for rule in route.rules for b in rule.backends
                     if b.weight and (b.cluster == UNRESOLVED or b.cluster in empty))


class Warming:
    def __init__(self) -> None:
        self._published: dict[ObjectKey, frozenset[str]] = {}  # per route, as last published
        self._pending: set[ObjectKey] = set()  # computed afresh since the last publish

    def cold(self, routes: RouteSet, clusters: tuple[ir.Cluster, ...]) -> list[str]:
        """Take in this translation's fresh routes; the refs of the cold ones."""
        self._pending.update(routes.fresh)
        if not self._pending:
            return []
        empty = {c.name for c in clusters if not c.endpoints}
        out = []
        for key in self._pending:
            o = routes.outcomes.get(key)
            if o is None or not o.served:
                continue
            if markers(o.ir, empty) - self._published.get(key, frozenset()):
                out.append(o.ir.ref)
        return sorted(out)

    def published(self, routes: RouteSet, clusters: tuple[ir.Cluster, ...]) -> None:
        """The table with this translation's routes went out."""
        if not self._pending:
            return
        empty = {c.name for c in clusters if not c.endpoints}
        for key in self._pending:
            o = routes.outcomes.get(key)
            if o is None:
                self._published.pop(key, None)
            else:
                self._published[key] = markers(o.ir, empty) if o.served else frozenset()
        self._pending.clear()
        if len(self._published) > len(routes.outcomes):  # routes gone with a context change
            self._published = {k: v for k, v in self._published.items() if k in routes.outcomes}
