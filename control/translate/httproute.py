"""HTTPRoutes: attaching each to the listeners its parentRefs select, and its rules.

Rules of attachment, per parentRef (Gateway API, in this order):

1. The parent must be a Gateway of ours. A Gateway that does not exist gets
   ``Accepted=False/NoMatchingParent``; one of another controller gets nothing
   (it is not ours to report on).
2. ``sectionName`` and ``port`` narrow the Gateway's listeners; none left is
   ``NoMatchingParent``.
3. The listeners' ``allowedRoutes`` (kind and namespace) must admit the route:
   ``NotAllowedByListeners`` otherwise. Admission alone counts the route in the
   listener's ``attachedRoutes``, as the spec defines that count.
4. The listener must be valid (Accepted, not Conflicted).
5. Hostnames must intersect (see ``intersect``): ``NoMatchingListenerHostname``.
6. At least one rule must be valid. A rule we cannot implement faithfully
   (a filter it cannot honour, see filters.py) is dropped and reported with ``PartiallyInvalid``
   ("Dropped Rule ..."); with none left the route is ``Accepted=False/
   UnsupportedValue``. Dropping is the spec's approach 1: never skip a filter
   silently, since serving a rule without its redirect or auth would be wrong.

``ResolvedRefs`` is the same for every parent: the first backendRef that did
not resolve gives the reason, the message lists them all.
"""

from __future__ import annotations

from control import ir
from control.status import (
    ACCEPTED,
    PARTIALLY_INVALID,
    RESOLVED_REFS,
    ParentRef,
    ParentStatus,
    StatusReport,
)
from control.objects import resources as r
from control.translate.filters import BACKEND_FILTERS, FilterError
from control.translate.filters import convert as convert_filters
from control.translate.backends import BackendResolver, Problem
from control.translate.gateway import GatewayState
from control.objects.resources import GATEWAY_GROUP, ObjectKey
from control.translate.store import Store
from control.objects.validation import duration_ms

DEFAULT_MATCH = ir.RouteMatch(path=ir.PathMatch(type="PathPrefix", value="/"))


class Effects:
    """What attaching a route would do to listeners, recorded, not done."""

    def __init__(self) -> None:
        self.counts: list[tuple[ObjectKey, int]] = []
        self.attachments: list[tuple[ObjectKey, int, tuple[str, ...]]] = []


def attach_route(
    route: r.HTTPRoute | r.FluxGateRoute,
    route_ir: ir.Route,
    dropped: list[str],
    problems: list[Problem],
    store: Store,
    gateways: dict[ObjectKey, GatewayState],
    report: StatusReport,
    controller_name: str,
    effects: Effects,
) -> bool:
    """Attach one route (any kind with parentRefs and hostnames) to its parents,
    recording its status in ``report`` and what it does to listeners in
    ``effects``; True if some listener serves it."""
    attached = False
    if not route.spec.parent_refs:
        report.note(f"{route.key} has no parentRefs: it attaches to nothing")
    for pref in route.spec.parent_refs:
        ref = ParentRef(pref.group, pref.kind, pref.namespace or route.namespace,
                        pref.name, pref.section_name, pref.port)
        if (ref.group, ref.kind) != (GATEWAY_GROUP, "Gateway"):
            report.note(f"{route.key}: parentRef {ref} ignored: only Gateway parents are supported")
            continue
        gw_key = ObjectKey("Gateway", ref.namespace, ref.name)
        state = gateways.get(gw_key)
        if state is None and gw_key in store.gateways:
            continue  # another controller's Gateway
        status = report.object(route.KIND, route.namespace, route.name,
                               route.metadata.generation)
        parent = status.parent(ref, controller_name)
        if state is None:
            parent.set(ACCEPTED, False, "NoMatchingParent", f"Gateway {ref.namespace}/{ref.name} not found")
        else:
            attached |= _attach(route, route_ir, ref, gw_key, state, store, parent, dropped, effects)
        _refs_condition(parent, problems)
        if dropped and parent.is_true(ACCEPTED):
            parent.set(PARTIALLY_INVALID, True, "UnsupportedValue", "Dropped Rule(s): " + "; ".join(dropped))
    return attached


def _attach(
    route: r.HTTPRoute, route_ir: ir.Route, ref: ParentRef, gw_key: ObjectKey, gw: GatewayState,
    store: Store, parent: ParentStatus, dropped: list[str], effects: Effects,
) -> bool:
    """Steps 2-6 for one Gateway parent; True if the route now serves on it."""
    name = f"Gateway {ref.namespace}/{ref.name}"
    if not gw.accepted:
        parent.set(ACCEPTED, False, "NoMatchingParent", f"{name} is not accepted")
        return False
    selected = [(i, lst) for i, lst in enumerate(gw.listeners)
                if ref.section_name in (None, lst.name) and ref.port in (None, lst.port)]
    if not selected:
        parent.set(ACCEPTED, False, "NoMatchingParent", f"{name} has no {_wanted(ref)}")
        return False
    admitting = [(i, lst) for i, lst in selected if lst.admits(route, store)]
    if not admitting:
        parent.set(ACCEPTED, False, "NotAllowedByListeners",
                   f"no listener of {name} allows {route.KIND}s from namespace {route.namespace!r}")
        return False
    effects.counts += [(gw_key, i) for i, _ in admitting]
    valid = [(i, lst) for i, lst in admitting if lst.usable]
    if not valid:
        names = ", ".join(lst.name for _, lst in admitting)
        parent.set(ACCEPTED, False, "NoMatchingParent", f"listeners of {name} not valid: {names}")
        return False
    matches: list[tuple[int, tuple[str, ...]]] = []
    for i, lst in valid:
        hosts = intersect(lst.spec.hostname, route.spec.hostnames)
        if hosts:
            matches.append((i, hosts))
    if not matches:
        parent.set(ACCEPTED, False, "NoMatchingListenerHostname",
                   f"no hostname of the route matches a listener hostname of {name}")
        return False
    if not route_ir.rules:
        parent.set(ACCEPTED, False, "UnsupportedValue", "no valid rule: " + "; ".join(dropped))
        return False
    effects.attachments += [(gw_key, i, hosts) for i, hosts in matches]
    parent.set(ACCEPTED, True, "Accepted")
    return True


def _wanted(ref: ParentRef) -> str:
    if ref.section_name is not None and ref.port is not None:
        return f"listener {ref.section_name!r} on port {ref.port}"
    if ref.section_name is not None:
        return f"listener {ref.section_name!r}"
    if ref.port is not None:
        return f"listener on port {ref.port}"
    return "listener"


def _refs_condition(parent: ParentStatus, problems: list[Problem]) -> None:
    if not problems:
        parent.set(RESOLVED_REFS, True, "ResolvedRefs")
    else:
        parent.set(RESOLVED_REFS, False, problems[0].reason,
                   "; ".join(dict.fromkeys(p.message for p in problems)))


# --- hostnames ---------------------------------------------------------------------


def intersect(listener: str | None, route_hosts: tuple[str, ...]) -> tuple[str, ...]:
    """The hostnames a route serves on a listener (Gateway API hostname matching).

    No listener hostname: the route's hostnames as they are. No route
    hostnames: the listener's (or ``ir.ANY_HOST``). Both: each pair that
    overlaps gives the more specific of the two, e.g. listener ``*.example.com``
    and route ``foo.example.com`` give ``foo.example.com``; ``*.example.com``
    matches any number of labels in front of ``example.com`` but not
    ``example.com`` itself.
    """
    if not route_hosts:
        return (listener or ir.ANY_HOST,)
    if not listener:
        return tuple(dict.fromkeys(route_hosts))
    found = (_overlap(listener, host) for host in route_hosts)
    return tuple(dict.fromkeys(h for h in found if h))


def _overlap(a: str, b: str) -> str:
    if a == b:
        return a
    a_wild, b_wild = a.startswith("*."), b.startswith("*.")
    if a_wild and b_wild:
        longer, shorter = (a, b) if len(a) > len(b) else (b, a)
        return longer if longer[1:].endswith(shorter[1:]) else ""
    if a_wild:
        return b if b.endswith(a[1:]) else ""
    if b_wild:
        return a if a.endswith(b[1:]) else ""
    return ""


# --- rules ---------------------------------------------------------------------------


def rules(
    route: r.HTTPRoute, resolver: BackendResolver
) -> tuple[list[ir.Rule], list[str], list[Problem]]:
    """The route's valid rules, why others were dropped, and unresolved refs."""
    rules: list[ir.Rule] = []
    dropped: list[str] = []
    problems: list[Problem] = []
    for index, rule in enumerate(route.spec.rules):
        per_backend = [f.type for ref in rule.backend_refs for f in ref.filters if f.type not in BACKEND_FILTERS]
        if per_backend:
            kinds = ", ".join(dict.fromkeys(per_backend))
            dropped.append(f"rule {index}: on a backendRef only header modifiers are supported yet ({kinds})")
            continue
        matches = tuple(_match(m) for m in rule.matches) or (DEFAULT_MATCH,)
        def resolve_mirror(ref: r.HTTPBackendRef) -> str:
            # Fire and forget: a mirror that cannot be resolved is reported
            # (ResolvedRefs) and skipped; the rule itself keeps serving.
            backend, problem = resolver.resolve(route, ref)
            if problem:
                problems.append(problem)
            return backend.cluster

        try:
            filters = convert_filters(rule.filters, rule.matches, resolve_mirror)
        except FilterError as exc:
            dropped.append(f"rule {index}: {exc}")
            continue
        backends = []
        try:
            for ref in rule.backend_refs:
                backend, problem = resolver.resolve(route, ref)
                if ref.filters:
                    backend = ir.Backend(cluster=backend.cluster, weight=backend.weight,
                                         filters=convert_filters(ref.filters, rule.matches))
                backends.append(backend)
                if problem:
                    problems.append(problem)
        except FilterError as exc:
            dropped.append(f"rule {index}: backendRef {exc}")
            continue
        extensions = [f for f in filters if isinstance(f, ir.ExtensionRef)]
        if extensions:
            # A filter that cannot be resolved is never skipped: every request
            # of the rule gets the error instead (an unresolved backend: 500).
            for f in extensions:
                problems.append(Problem("InvalidKind", (
                    f"rule {index}: ExtensionRef {f.group or 'core'}/{f.kind} {f.name!r}: FluxGate has"
                    " no filter of that kind; the rule's requests are answered with 500")))
            filters, backends = (), [ir.Backend(cluster="")]
        timeout = rule.timeouts.request if rule.timeouts else None
        backend_timeout = rule.timeouts.backend_request if rule.timeouts else None
        rules.append(ir.Rule(
            index=index,
            name=rule.name or "",
            matches=matches,
            backends=tuple(backends),
            filters=filters,
            timeout_ms=duration_ms(timeout) if timeout else 0,
            backend_timeout_ms=duration_ms(backend_timeout) if backend_timeout else 0,
            retry=retry_policy(rule.retry),
        ))
    return rules, dropped, problems


DEFAULT_RETRY_ATTEMPTS = 1  # HTTPRoute retry without attempts (the spec leaves it to us)


def retry_policy(retry: r.HTTPRouteRetry | None) -> ir.Retry | None:
    """HTTPRoute ``retry``: the listed statuses, and connection failures (which
    never reached the backend, so trying another one is always safe)."""
    if retry is None:
        return None
    attempts = DEFAULT_RETRY_ATTEMPTS if retry.attempts is None else retry.attempts
    if attempts == 0:
        return None
    return ir.Retry(attempts=attempts, codes=tuple(sorted(retry.codes)), connect_failure=True,
                    reset=False, backoff_ms=duration_ms(retry.backoff) if retry.backoff else 0)


def _match(m: r.HTTPRouteMatch) -> ir.RouteMatch:
    # Repeated names: the spec says only the first entry counts. Header names
    # are case-insensitive, query parameter names are not.
    headers: dict[str, ir.HeaderMatch] = {}
    for h in m.headers:
        headers.setdefault(h.name.lower(), ir.HeaderMatch(name=h.name.lower(), value=h.value, type=h.type))
    query: dict[str, ir.QueryMatch] = {}
    for q in m.query_params:
        query.setdefault(q.name, ir.QueryMatch(name=q.name, value=q.value, type=q.type))
    return ir.RouteMatch(
        path=ir.PathMatch(type=m.path.type, value=m.path.value),
        method=m.method or "",
        headers=tuple(headers.values()),
        query=tuple(query.values()),
    )

