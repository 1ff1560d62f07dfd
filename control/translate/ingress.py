"""Ingresses and IngressClasses (networking.k8s.io/v1), into the IR that HTTPRoutes use.

Rules:

* Classes. An IngressClass is ours when ``spec.controller`` is FluxGate's
  (``fluxgate.io/ingress-controller``); in file mode the class named
  ``default_class`` is ours too when no IngressClass object has that name (as
  for the ``fluxgate`` GatewayClass). An IngressClass with ``parameters`` is
  not accepted (FluxGate reads none) and its Ingresses are rejected.
* An Ingress's class is ``spec.ingressClassName``, else the legacy annotation
  ``kubernetes.io/ingress.class`` (a class name, compared like the field),
  else the default class: one of ours annotated
  ``ingressclass.kubernetes.io/is-default-class: "true"``. When a class of
  another controller is the default as well, the default is ambiguous and a
  class-less Ingress is nobody's. Ingresses that are not ours get no status,
  only a note.
* Listeners. All Ingresses are served by one HTTP listener on the global bind
  address and ``http_port`` (80); compile merges it with Gateway listeners on
  the same socket. It exists only when some Ingress is served, so a
  configuration without Ingresses compiles exactly as before. ``spec.tls``
  adds an HTTPS listener on ``https_port`` that is in the IR and status only
  (``programmed=False``, condition ``TLSProgrammed=False/Pending``), as for
  HTTPS Gateway listeners until TLS termination exists: such hosts are served
  over plain HTTP only.
* Routes. IR routes attach to hostnames as a whole, so an Ingress gives one
  route per host: ``Ingress/ns/name`` for rules without a host,
  ``Ingress/ns/name (host)`` otherwise. The space sorts before every
  character of a name, so compile's precedence ties between Ingresses still
  go by namespace/name. Same host and path in several Ingresses: compile's
  precedence decides (the older Ingress, then namespace/name), which is also
  ingress-nginx's rule.
* Hosts: exact, or ``*.suffix``. A wildcard matches as in Gateway API (any
  number of labels); the Ingress spec and ingress-nginx match exactly one
  label, which the IR cannot express yet.
* Paths: Exact is Exact; Prefix is PathPrefix (element-wise with the trailing
  slash ignored in both APIs); ImplementationSpecific is PathPrefix too, ""
  meaning "/": ingress-nginx's meaning when regexes are off, except that ours
  is segment-aware (``/foo`` does not match ``/foobar``).
* Backends: a Service port by number, or by name through the Service's ports.
  One that does not resolve (Service or port not found, a ``resource``
  backend) stays with ``cluster=""`` so its traffic gets a 500, as for
  HTTPRoutes, and ``ResolvedRefs`` is False with the field and the reason.
* ``spec.defaultBackend`` is the catch-all of the Ingress socket: one route
  (``Ingress/ns/name (defaultBackend)``, PathPrefix "/") on "*" and on every
  host served on that socket, by Ingresses and HTTPRoutes alike. So that it
  loses to every rule, it is left off a host that already has an
  unconditional "/" prefix entry (that entry takes every request it would).
  Of several Ingresses with a defaultBackend the oldest (then
  namespace/name) wins; the others are dropped (DefaultBackendConflict).

Annotations: see ``annotations.py`` (``fluxgate.io/rewrite-target``, ``ssl-redirect``,
``canary``, ``canary-weight``, ``canary-by-header``, ``canary-by-header-value``).

Status: one object per Ingress of ours (and per IngressClass of ours) in the
StatusReport: ``Accepted`` (False: InvalidAnnotation, InvalidIngressClass,
or every part dropped), ``ResolvedRefs``, ``Programmed`` (True when something
of it is in the table; False/Shadowed for a catch-all that every host
overrides), ``PartiallyInvalid`` (parts dropped), ``TLSProgrammed``.
``status.loadBalancer`` is not written: it means nothing in file mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from control import ir
from control.status import (
    ACCEPTED,
    PARTIALLY_INVALID,
    PROGRAMMED,
    RESOLVED_REFS,
    ObjectStatus,
    StatusReport,
)
from control.objects import resources as r
from control.objects.resources import created_epoch
from control.translate.annotations import AnnotationError, Settings, read_settings
from control.translate.backends import BackendResolver, Problem
from control.translate.store import Store

INGRESS_CONTROLLER = "fluxgate.io/ingress-controller"
HTTP_PORT = 80
HTTPS_PORT = 443
HTTP_LISTENER = "ingress-http"
HTTPS_LISTENER = "ingress-https"
TLS_PROGRAMMED = "TLSProgrammed"

ROOT = ir.RouteMatch(path=ir.PathMatch(type="PathPrefix", value="/"))
DEFAULT_KEY = ("", "defaultBackend", "")  # the pair of every defaultBackend


# --- classes -------------------------------------------------------------------------


@dataclass
class Classes:
    """Our IngressClass names (name → why not accepted, "" if accepted) and the default."""

    ours: dict[str, str] = field(default_factory=dict)
    default: str | None = None

    def of(self, ing: r.Ingress) -> str | None:
        """The class an Ingress asks for (None: none and no default of ours)."""
        if ing.spec.ingress_class_name is not None:
            return ing.spec.ingress_class_name
        return ing.annotations.get(r.INGRESS_CLASS_ANNOTATION, self.default)


def accept_classes(
    classes: list[r.IngressClass], report: StatusReport, *, controller_name: str,
    default_class: str | None,
) -> Classes:
    out = Classes()
    for ic in classes:
        if ic.spec.controller != controller_name:
            continue
        status = report.object(ic.KIND, "", ic.name, ic.metadata.generation)
        if ic.spec.parameters is not None:
            out.ours[ic.name] = f"IngressClass {ic.name!r} has parameters, which FluxGate does not read"
            status.set(ACCEPTED, False, "InvalidParameters", "parameters are not supported by FluxGate")
        else:
            out.ours[ic.name] = ""
            default = "; the default IngressClass" if ic.is_default else ""
            status.set(ACCEPTED, True, "Accepted", f"handled by {controller_name}{default}")
    if default_class and not any(ic.name == default_class for ic in classes):
        out.ours[default_class] = ""
    defaults = [ic for ic in classes if ic.is_default]
    mine = [ic.name for ic in defaults if ic.name in out.ours]
    others = [ic.name for ic in defaults if ic.name not in out.ours]
    if mine and others:
        report.note(f"IngressClasses {', '.join(mine + others)} are all marked default: Ingresses"
                    " without a class are left to no controller")
    elif mine:
        out.default = mine[0]
    return out


# --- one Ingress ---------------------------------------------------------------------


@dataclass(eq=False)
class _Path:
    """One path of an Ingress (or its defaultBackend), as decided."""

    where: str  # the field: "spec.rules[0].http.paths[1]" or "spec.defaultBackend"
    host: str  # "" for the defaultBackend, ir.ANY_HOST for rules without a host
    match: ir.RouteMatch
    backend: ir.Backend
    index: int
    # A main's merged canaries; a canary's main once merged.
    canary_weights: list[ir.Backend] = field(default_factory=list)
    canary_rules: list[tuple[ir.RouteMatch, ir.Backend, str]] = field(default_factory=list)
    merged_into: _Path | None = None
    in_table: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """Host and path as matching sees them: what a canary pairs on."""
        if not self.host:
            return DEFAULT_KEY
        path = self.match.path
        value = (path.value.rstrip("/") or "/") if path.type == "PathPrefix" else path.value
        return (self.host, path.type, value)

    def describe(self) -> str:
        if not self.host:
            return "the defaultBackend"
        host = "any host" if self.host == ir.ANY_HOST else f"host {self.host}"
        return f"{host}, {self.match.path.type} {self.match.path.value}"


@dataclass(eq=False)
class _Plan:
    """An accepted Ingress during translation."""

    ingress: r.Ingress
    status: ObjectStatus
    settings: Settings
    paths: list[_Path]
    default: _Path | None
    problems: list[Problem]  # backends that did not resolve
    dropped: list[Problem] = field(default_factory=list)  # parts not served

    @property
    def rank(self) -> tuple:
        """compile's precedence between Ingresses: older first, then namespace/name."""
        created = created_epoch(self.ingress.metadata.creation_timestamp)
        return ((0, created) if created is not None else (1, 0.0),
                f"{self.ingress.namespace}/{self.ingress.name}")

    def parts(self) -> list[_Path]:
        return self.paths + ([self.default] if self.default else [])


def _plan(ing: r.Ingress, settings: Settings, status: ObjectStatus, store: Store,
          resolver: BackendResolver) -> _Plan:
    problems: list[Problem] = []
    paths: list[_Path] = []
    for i, rule in enumerate(ing.spec.rules or ()):
        for j, path in enumerate(rule.http.paths or () if rule.http else ()):
            where = f"spec.rules[{i}].http.paths[{j}]"
            if path.path_type == "Exact":
                match = ir.RouteMatch(path=ir.PathMatch(type="Exact", value=path.path))
            else:  # Prefix, ImplementationSpecific
                match = ir.RouteMatch(path=ir.PathMatch(type="PathPrefix", value=path.path or "/"))
            backend = _backend(ing, path.backend, f"{where}.backend", store, resolver, problems)
            paths.append(_Path(where, rule.host or ir.ANY_HOST, match, backend, len(paths)))
    default = None
    if ing.spec.default_backend is not None:
        where = "spec.defaultBackend"
        backend = _backend(ing, ing.spec.default_backend, where, store, resolver, problems)
        default = _Path(where, "", ROOT, backend, 0)
    return _Plan(ing, status, settings, paths, default, problems)


def _backend(ing: r.Ingress, spec: r.IngressBackend, where: str, store: Store,
             resolver: BackendResolver, problems: list[Problem]) -> ir.Backend:
    if spec.resource is not None:
        res = spec.resource
        problems.append(Problem("InvalidKind", f"{where}: resource backends are not supported"
                                f" ({res.api_group or 'core'}/{res.kind} {res.name}); use a Service"))
        return ir.Backend(cluster="")
    svc = spec.service
    assert svc is not None  # validation requires a service or a resource
    number = svc.port.number
    if svc.port.name:
        service = store.services.get((ing.namespace, svc.name))
        port = next((p for p in service.ports if p.name == svc.port.name), None) if service else None
        if port is None:
            missing = "not found" if service is None else f"has no port named {svc.port.name!r}"
            problems.append(Problem("BackendNotFound", f"{where}: Service {ing.namespace}/{svc.name} {missing}"))
            return ir.Backend(cluster="")
        number = port.port
    # Same namespace, so no ReferenceGrant is ever needed; the resolver reads only
    # the referrer's namespace and kind.
    backend, problem = resolver.resolve(ing, r.HTTPBackendRef(name=svc.name, port=number))  # type: ignore[arg-type]
    if problem:
        problems.append(Problem(problem.reason, f"{where}: {problem.message}"))
    return backend


# --- all Ingresses -------------------------------------------------------------------


def translate_ingresses(
    store: Store,
    resolver: BackendResolver,
    report: StatusReport,
    gateway_listeners: tuple[ir.Listener, ...] = (),
    gateway_routes: tuple[ir.Route, ...] = (),
    *,
    controller_name: str = INGRESS_CONTROLLER,
    default_class: str | None = None,
    http_port: int = HTTP_PORT,
    https_port: int = HTTPS_PORT,
) -> tuple[tuple[ir.Listener, ...], tuple[ir.Route, ...]]:
    """The Ingress listeners and routes; status recorded in ``report``.

    ``gateway_listeners``/``gateway_routes``: what HTTPRoutes already serve, so
    the defaultBackend knows the hosts of its socket.
    """
    classes = accept_classes(list(store.ingress_classes.values()), report,
                             controller_name=controller_name, default_class=default_class)
    plans = []
    for ing in store.ingresses.values():
        plan = _accept(ing, classes, report, store, resolver)
        if plan is not None:
            plans.append(plan)
    plans.sort(key=lambda p: p.rank)
    mains = [p for p in plans if not p.settings.canary]
    index = _pair_mains(mains)
    for canary in (p for p in plans if p.settings.canary):
        _merge_canary(canary, index)

    routes: list[tuple[ir.Route, tuple[str, ...]]] = []
    tls: list[ir.Attachment] = []
    for plan in mains:
        wanted = [h for t in plan.ingress.spec.tls or () for h in t.hosts or (ir.ANY_HOST,)]
        for route, host in _host_routes(plan):
            # The Ingress spec: "*.foo.com" matches "bar.foo.com", never "baz.bar.foo.com".
            routes.append((route, (ir.one_label(host),)))
            if any(_covers(t, host) for t in wanted):
                tls.append(ir.Attachment(route=route.ref, hostnames=(ir.one_label(host),)))
    owner = next((p for p in mains if p.default is not None), None)
    if owner is not None and owner.default is not None:
        hosts = _catch_all_hosts(routes, gateway_listeners, gateway_routes, http_port)
        owner.default.in_table = bool(hosts)
        if hosts:
            routes.append((_route(owner, "defaultBackend", [owner.default]), hosts))

    listeners = []
    if routes:
        listeners.append(ir.Listener(
            gateway="", name=HTTP_LISTENER, port=http_port, protocol="HTTP", programmed=True,
            attachments=_sorted(ir.Attachment(route=route.ref, hostnames=hosts)
                                for route, hosts in routes),
        ))
    if any(p.ingress.spec.tls for p in plans):
        listeners.append(ir.Listener(
            gateway="", name=HTTPS_LISTENER, port=https_port, protocol="HTTPS",
            programmed=False, attachments=_sorted(tls),
        ))
    for plan in plans:
        _conditions(plan, http_port)
    return tuple(listeners), tuple(sorted((route for route, _ in routes), key=lambda x: x.ref))


def _sorted(attachments: Iterable[ir.Attachment]) -> tuple[ir.Attachment, ...]:
    return tuple(sorted(attachments, key=lambda a: a.route))


def _covers(tls_host: str, host: str) -> bool:
    """Whether a ``spec.tls`` host names a rule's host."""
    if tls_host in (ir.ANY_HOST, host):
        return True
    return tls_host.startswith("*.") and host.endswith(tls_host[1:])


def _accept(ing: r.Ingress, classes: Classes, report: StatusReport, store: Store,
            resolver: BackendResolver) -> _Plan | None:
    """Step 1 for one Ingress: ours? valid annotations? Then its paths and backends."""
    name = classes.of(ing)
    if name is None:
        report.note(f"{ing.key} ignored: it names no IngressClass and no IngressClass of"
                    " FluxGate is the default (set spec.ingressClassName)")
        return None
    if name not in classes.ours:
        report.note(f"{ing.key} ignored: IngressClass {name!r} is not handled by FluxGate")
        return None
    status = report.object(ing.KIND, ing.namespace, ing.name, ing.metadata.generation)
    if classes.ours[name]:
        _reject(status, "InvalidIngressClass", classes.ours[name])
        return None
    try:
        settings, notes = read_settings(ing.annotations)
    except AnnotationError as exc:
        _reject(status, "InvalidAnnotation", str(exc))
        return None
    for text in notes:
        report.note(f"{ing.key}: {text}")
    return _plan(ing, settings, status, store, resolver)


def _reject(status: ObjectStatus, reason: str, message: str) -> None:
    status.set(ACCEPTED, False, reason, message)
    status.set(PROGRAMMED, False, "Invalid", "the Ingress is not accepted")


def _pair_mains(mains: list[_Plan]) -> dict[tuple[str, str, str], _Path]:
    """The winning main path of each host+path pair (and the winning defaultBackend).

    ``mains`` are in rank order and paths in field order, which is compile's
    precedence between equal matches, so the path found first is the one served.
    Losing defaultBackends are dropped here (the catch-all is one route).
    """
    index: dict[tuple[str, str, str], _Path] = {}
    owner = ""
    for plan in mains:
        for path in plan.paths:
            index.setdefault(path.key, path)
        if plan.default is None:
            continue
        if DEFAULT_KEY not in index:
            index[DEFAULT_KEY] = plan.default
            owner = f"{plan.ingress.namespace}/{plan.ingress.name}"
            continue
        plan.dropped.append(Problem(
            "DefaultBackendConflict",
            f"spec.defaultBackend: not used: the defaultBackend of Ingress {owner} is the"
            " catch-all (the oldest one, then the first by namespace/name)"))
        plan.default = None
    return index


def _merge_canary(canary: _Plan, index: dict[tuple[str, str, str], _Path]) -> None:
    """Pair each path of a canary with its main; canaries come in rank order."""
    s = canary.settings
    label = f"canary {canary.ingress.namespace}/{canary.ingress.name}"
    for path in canary.parts():
        main = index.get(path.key)
        if main is None:
            canary.dropped.append(Problem(
                "NoMainIngress", f"{path.where}: no main Ingress serves {path.describe()}"))
            continue
        if s.canary_weight is not None:
            taken = sum(b.weight for b in main.canary_weights)
            if taken + s.canary_weight > 100:
                canary.dropped.append(Problem(
                    "CanaryWeightExceeded",
                    f"{path.where}: canary weight {s.canary_weight} would give the canaries of"
                    f" {main.describe()} {taken + s.canary_weight}% (at most 100)"))
                continue
            main.canary_weights.append(ir.Backend(cluster=path.backend.cluster, weight=s.canary_weight))
        if s.canary_header:
            header = ir.HeaderMatch(
                name=s.canary_header.lower(),
                value=s.canary_header_value or ".*",
                type="Exact" if s.canary_header_value else "RegularExpression",
            )
            match = ir.RouteMatch(path=main.match.path, headers=(header,))
            main.canary_rules.append((match, path.backend, f"{label} {path.where}"))
        path.merged_into = main


# --- IR ------------------------------------------------------------------------------


def _host_routes(plan: _Plan) -> list[tuple[ir.Route, str]]:
    """A main Ingress's routes, one per host (in the order hosts first appear)."""
    by_host: dict[str, list[_Path]] = {}
    for path in plan.paths:
        by_host.setdefault(path.host, []).append(path)
        path.in_table = True
    return [(_route(plan, host, paths), host) for host, paths in by_host.items()]


def _route(plan: _Plan, part: str, paths: list[_Path]) -> ir.Route:
    """The route of one host (or the defaultBackend) of a main Ingress, canaries merged."""
    ing, settings = plan.ingress, plan.settings
    redirect = settings.ssl_redirect
    rules = []
    for path in paths:
        backends: tuple[ir.Backend, ...] = (path.backend,)
        if path.canary_weights:
            main = ir.Backend(cluster=path.backend.cluster,
                              weight=100 - sum(b.weight for b in path.canary_weights))
            backends = (main, *path.canary_weights)
        rules.append(ir.Rule(index=path.index, name=path.where, matches=(path.match,),
                             backends=() if redirect else backends,
                             filters=settings.filters(path.match)))
    extra = len(plan.paths) + 1
    for path in paths:
        for match, backend, name in path.canary_rules:
            rules.append(ir.Rule(index=extra, name=name, matches=(match,),
                                 backends=() if redirect else (backend,),
                                 filters=settings.filters(match)))
            extra += 1
    name = ing.name if part == ir.ANY_HOST else f"{ing.name} ({part})"
    return ir.Route(kind=ing.KIND, namespace=ing.namespace, name=name,
                    created=created_epoch(ing.metadata.creation_timestamp), rules=tuple(rules))


def _catch_all_hosts(
    ingress_routes: list[tuple[ir.Route, tuple[str, ...]]], listeners: tuple[ir.Listener, ...],
    routes: tuple[ir.Route, ...], port: int,
) -> tuple[str, ...]:
    """The hosts the defaultBackend goes on: "*" and every host of the Ingress
    socket, except those with an unconditional "/" prefix entry already."""
    covered: dict[str, bool] = {ir.ANY_HOST: False}

    def add(route: ir.Route | None, hosts: tuple[str, ...]) -> None:
        for host in hosts:
            covered[host] = covered.get(host, False) or (route is not None and _takes_all(route))

    by_ref = {route.ref: route for route in routes}
    for lst in listeners:
        if lst.programmed and lst.port == port and "" in lst.addresses:
            for att in lst.attachments:
                add(by_ref.get(att.route), att.hostnames)
    for route, hosts in ingress_routes:
        add(route, hosts)
    return tuple(sorted(host for host, full in covered.items() if not full))


def _takes_all(route: ir.Route) -> bool:
    """Whether a route has a match that every request satisfies."""
    return any(
        m.path.type == "PathPrefix" and (m.path.value.rstrip("/") or "/") == "/"
        and not (m.method or m.headers or m.query)
        for rule in route.rules for m in rule.matches
    )


# --- status --------------------------------------------------------------------------


def _conditions(plan: _Plan, http_port: int) -> None:
    status = plan.status
    if plan.settings.canary:
        served = [p for p in plan.parts() if p.merged_into is not None]
        in_table = any(p.merged_into.in_table for p in served if p.merged_into)
    else:
        served = plan.parts()
        in_table = any(p.in_table for p in served)
    dropped = "; ".join(d.message for d in plan.dropped)
    if not served:
        reason = plan.dropped[0].reason if plan.dropped else "NoPaths"
        status.set(ACCEPTED, False, reason, dropped or "no rule has http paths and there is no defaultBackend")
        status.set(PROGRAMMED, False, "Invalid", "nothing of the Ingress can be served")
        return
    status.set(ACCEPTED, True, "Accepted")
    if plan.problems:
        status.set(RESOLVED_REFS, False, plan.problems[0].reason,
                   "; ".join(dict.fromkeys(p.message for p in plan.problems)))
    else:
        status.set(RESOLVED_REFS, True, "ResolvedRefs")
    if in_table:
        status.set(PROGRAMMED, True, "Programmed", f"served over HTTP on port {http_port}")
    else:
        status.set(PROGRAMMED, False, "Shadowed",
                   f"every host on port {http_port} has an unconditional '/' rule: the defaultBackend"
                   " is never chosen")
    if plan.dropped:
        status.set(PARTIALLY_INVALID, True, plan.dropped[0].reason, dropped)
    if plan.ingress.spec.tls:
        hosts = sorted({h for tls in plan.ingress.spec.tls for h in tls.hosts or ("*",)})
        status.set(TLS_PROGRAMMED, False, "Pending",
                   "TLS termination is not implemented yet: " + ", ".join(hosts)
                   + " served over HTTP only")

