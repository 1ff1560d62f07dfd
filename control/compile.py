"""compile_table(): IR → the route table of ``shm.schema``. A pure function.

Rules (what workers rely on, so they do no work per request that could be
done here once):

* One ``Listener`` per bound socket (address, port). Gateway listeners that
  share a socket, in one Gateway or several, are merged into it. Only
  programmed listeners are compiled; a listener with no routes is still bound
  (it answers 404).
* One ``VirtualHost`` per hostname served on a socket, named
  ``"address:port|hostname"``; routes attached without a hostname form the
  ``"*"`` vhost, the socket's ``default_vhost``. ``exact`` is sorted by host,
  ``wildcards`` most specific (longest) first, so the first wildcard that
  matches a request is the right one.
* A request's host selects exactly one vhost (exact, else the first matching
  wildcard, else default); within it ``entries`` are in Gateway API precedence
  order and the first entry that matches wins:
    1. Exact path, then RegularExpression (longest pattern first; the spec
       leaves regex precedence to implementations), then PathPrefix with the
       most characters;
    2. a method match; 3. more header matches; 4. more query matches;
    5. the older route (creationTimestamp; routes without one come after);
    6. "{namespace}/{name}" alphabetically; 7. rule order, then match order.
* PathPrefix values are stored without a trailing slash ("/" stays "/").
  Exact and PathPrefix values are stored in the spelling workers normalise
  request paths to (``canonical_path``); a RegularExpression is matched
  against the normalised path as written.
* Each IR filter kind has one function that lays it out as its schema filter,
  found by ``FILTERS`` (its row names the kind). What workers compare
  case-insensitively (header names to remove, CORS origins and headers) is
  lower-cased there; header templates are split into parts there. A mirror
  whose backend could not be resolved is left out.
* Identical ``Action``s within a vhost are stored once and shared by index.
* ``clusters`` are exactly those referenced by some action (a backend or a
  mirror), sorted by name.
* Everything is sorted or derived from sorted input, so equal IR compiles to an
  equal table: the publisher keeps the bytes of every blob whose struct is
  unchanged.
* A ``CompileMemo`` passed from call to call makes a one-route change cost
  that route plus the sort of its vhost; it never changes the result
  (tests/control/test_translate_memo.py compares tables with and without).
"""

from __future__ import annotations

import bisect
import operator
import re
from collections import Counter
from typing import Any, Callable, NamedTuple

from shm import schema
from shm.codec import named
from common.path import KEEP
from common.path import normalize as normalize_path
from control import ir as irt

_PATH_RANK = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}
_PATH_TYPES = {
    "Exact": schema.PathExact,
    "PathPrefix": schema.PathPrefix,
    "RegularExpression": schema.PathRegex,
}


class _Item(NamedTuple):
    """One route entry before its vhost is assembled: (rule, match) of a route."""

    key: tuple  # _precedence
    match: schema.Match
    action: schema.Action  # interned: equal actions are one object
    source: str


class CompileMemo:
    """What one compile_table() call leaves for the next. It never changes the
    result, only the cost: a route's items are kept while it is the very same
    ir.Route object (translate's memo hands back unchanged routes as they
    were), and a virtual host is kept while the item lists it is built from
    are. Actions are interned, so equal actions are one object and a vhost
    dedupes them by identity instead of hashing each one again."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[irt.Route, tuple[_Item, ...]]] = {}
        # The last table's layout: patched when only some routes changed
        # (``_patch``: a one-route edit at 100k routes costs that route's
        # vhosts), else rebuilt (``_build``), reusing each vhost whose item lists
        # are the same and each socket's host order while its hosts are.
        self.state: _Layout | None = None
        self.last_layout: _Layout | None = None  # what _build compares with (even if spoiled)
        self.actions: dict[schema.Action, schema.Action] = {}
        self.reused = self.compiled = 0


def compile_table(ir: irt.IR, source: str = "", memo: CompileMemo | None = None) -> schema.CompiledTable:
    memo = memo if memo is not None else CompileMemo()
    memo.reused = memo.compiled = 0
    state = memo.state
    # Until one of the layout paths below completes: a failure half-way leaves
    # ``memo.routes`` partly updated, so the next table is built, not patched.
    memo.state = None
    # Updated in place (refs are unique: one route per object): a one-route
    # edit at 100k routes makes one new entry, not a new 100k-entry dict for
    # the collector to walk.
    live = memo.routes
    changed: list[str] = []  # refs whose items are new, or gone
    count = 0  # items in this table
    for route in ir.routes:
        hit = live.get(route.ref)
        if hit is not None and hit[0] is route:
            memo.reused += 1
        else:
            hit = live[route.ref] = (route, _items(route, memo.actions))
            memo.compiled += 1
            changed.append(route.ref)
        count += len(hit[1])
    if len(live) > len(ir.routes):
        refs = {route.ref for route in ir.routes}
        gone = [ref for ref in live if ref not in refs]
        for ref in gone:
            del live[ref]
        changed += gone
    if len(memo.actions) > 2 * count + 64:
        memo.actions = {i.action: i.action for _, items in live.values() for i in items}
    signature = tuple((lst.gateway, lst.name, lst.addresses, lst.port, lst.programmed)
                      for lst in ir.listeners)
    if (state is not None and state.signature == signature
            and len(changed) * 8 <= len(live) + 64 and _patch(state, ir, live, changed)):
        memo.state = state
    else:
        memo.state = _build(ir, live, signature, memo)
    state = memo.state
    clusters = tuple(
        schema.Cluster(
            name=c.name,
            endpoints=tuple(schema.Endpoint(e.address, e.port) for e in c.endpoints),
            host_rewrite=c.host_rewrite,
        )
        for c in ir.clusters
        if state.used.get(c.name)
    )
    return schema.CompiledTable(
        listeners=tuple(state.listeners),
        vhosts=tuple(state.vhosts),
        clusters=tuple(sorted(clusters, key=lambda c: c.name)),
        source=source,
    )


class _Layout:
    """The table's structure as the last compile_table() left it, for the next
    one to patch (``_patch``) instead of rebuilding (``_build``)."""

    def __init__(self, signature: tuple) -> None:
        self.signature = signature  # the listeners, attachments aside
        # socket → host → route ref → the route's items (a route once per host,
        # however many Gateway listeners bring it there)
        self.hosts: dict[tuple[str, int], dict[str, dict[str, tuple[_Item, ...]]]] = {}
        self.placed: dict[str, list[tuple[tuple[str, int], str]]] = {}  # ref → its (socket, host)s
        # socket → host → (item lists, vhost, index in vhosts, HostEntry or None)
        self.vhost_of: dict[tuple[str, int], dict[str, tuple]] = {}
        self.orders: dict[tuple[str, int], tuple[set[str], list[str]]] = {}  # hosts, their order
        self.listeners: list[schema.Listener] = []
        self.vhosts: list[schema.VirtualHost] = []
        self.used: Counter[str] = Counter()  # cluster → vhosts sending to it
        self.gateways: dict[tuple[str, int], str] = {}  # socket → its Gateways' label


def _build(ir: irt.IR, live: dict, signature: tuple, memo: CompileMemo) -> _Layout:
    """The whole structure, reusing every vhost whose item lists are unchanged."""
    previous = memo.last_layout
    state = memo.last_layout = _Layout(signature)
    for lst in ir.listeners:
        if not lst.programmed:
            continue
        for address in lst.addresses:
            sock = (address, lst.port)
            hosts = state.hosts.setdefault(sock, {})
            _add_gateway(state.gateways, sock, lst.gateway)
            for att in lst.attachments:
                items = live[att.route][1]
                placed = state.placed.setdefault(att.route, [])
                for host in att.hostnames:
                    hosts.setdefault(host, {}).setdefault(att.route, items)
                    placed.append((sock, host))

    for sock in sorted(state.hosts):
        address, port = sock
        hosts = state.hosts[sock]
        name = listener_name(address, port)
        exact, wildcards, default = [], [], -1
        order = previous.orders.get(sock) if previous is not None else None
        if order is None or len(order[0]) != len(hosts) or hosts.keys() != order[0]:
            order = (set(hosts), _host_order(hosts))
        state.orders[sock] = order
        before = previous.vhost_of.get(sock, {}) if previous is not None else {}
        now = state.vhost_of[sock] = {}
        for host in order[1]:
            index = len(state.vhosts)
            lists = tuple(hosts[host].values())
            hit = before.get(host)
            gateway = state.gateways[sock]
            # identical lists compare by identity: cheap
            if hit is not None and hit[0] == lists and hit[1].gateway == gateway:
                vhost, entry = hit[1], hit[3] if hit[2] == index else None
            else:
                vhost, entry = _vhost(f"{name}|{host}", lists, gateway), None
            state.vhosts.append(vhost)
            state.used.update(_clusters_of(vhost))
            if host == irt.ANY_HOST:
                default = index
            elif host[:2] in ("*.", "+."):
                entry = entry or schema.HostEntry("*" + host[1:], index, single_label=host[0] == "+")
                wildcards.append(entry)
            else:
                entry = entry or schema.HostEntry(host, index)
                exact.append(entry)
            now[host] = (lists, vhost, index, entry)
        state.listeners.append(schema.Listener(
            name=name, address=address, port=port, protocol="HTTP",
            exact=tuple(exact), wildcards=tuple(wildcards), default_vhost=default,
            gateway=state.gateways[sock],
        ))
    return state


def _patch(state: _Layout, ir: irt.IR, live: dict, changed: list[str]) -> bool:
    """Move the ``changed`` routes in ``state`` and rebuild only the vhosts they
    touch; False (``state`` is then spoiled) when the set of hosts changes,
    which ``_build`` handles. Sound because a route's attachments change only
    with the route (translate computes both from the same objects: a new
    ir.Route, or a listener change, which changes ``signature``), and each
    listener's attachments are sorted by route ref (ir.Listener), so each
    changed route is found by bisection."""
    dirty: set[tuple[tuple[str, int], str]] = set()
    for ref in changed:
        for sock, host in state.placed.pop(ref, ()):
            state.hosts[sock][host].pop(ref, None)
            dirty.add((sock, host))
    programmed = [(lst, [(address, lst.port) for address in lst.addresses])
                  for lst in ir.listeners if lst.programmed]
    for ref in changed:
        hit = live.get(ref)
        if hit is None:
            continue  # gone
        for lst, socks in programmed:
            i = bisect.bisect_left(lst.attachments, ref, key=_ROUTE)
            if i == len(lst.attachments) or lst.attachments[i].route != ref:
                continue
            hostnames = lst.attachments[i].hostnames
            placed = state.placed.setdefault(ref, [])
            for sock in socks:
                hosts = state.hosts[sock]
                for host in hostnames:
                    at = hosts.get(host)
                    if at is None:
                        return False  # a new host
                    at.setdefault(ref, hit[1])
                    placed.append((sock, host))
                    dirty.add((sock, host))
    for sock, host in dirty:
        routes = state.hosts[sock][host]
        if not routes:
            return False  # a host gone
        lists = tuple(routes.values())
        old_lists, old, index, entry = state.vhost_of[sock][host]
        if old_lists == lists:
            continue
        vhost = _vhost(f"{listener_name(*sock)}|{host}", lists, state.gateways[sock])
        state.used.subtract(_clusters_of(old))
        state.used.update(_clusters_of(vhost))
        state.vhosts[index] = vhost
        state.vhost_of[sock][host] = (lists, vhost, index, entry)
    return True


def _clusters_of(vhost: schema.VirtualHost) -> set[str]:
    """The clusters a vhost's actions send to (backends and mirrors)."""
    out = {wc.cluster for action in vhost.actions for wc in action.backends}
    out.update(f.cluster for action in vhost.actions for f in action.filters
               if isinstance(f, schema.RequestMirror))
    return out


_ROUTE = operator.attrgetter("route")


def listener_name(address: str, port: int) -> str:
    """"address:port", IPv6 in brackets; ":port" for the global bind address."""
    if ":" in address:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def normalize_prefix(value: str) -> str:
    """A PathPrefix without its trailing slash(es); "/" stays "/"."""
    return value.rstrip("/") or "/"


def canonical_path(value: str) -> str:
    """An Exact/PathPrefix value in the one spelling workers normalise request
    paths to (common/path.py: escaped unreserved characters decoded, other
    escapes upper-cased). Validation already refused what else normalising
    would change (dot segments, '//', %2F)."""
    if "%" not in value:
        return value
    return normalize_path(value.encode(), KEEP, True)[0].decode()


def _host_order(hosts: dict[str, Any]) -> list[str]:
    """Exact hosts alphabetically, wildcards most specific first, then "*".

    For one suffix a one-label wildcard ("+.x") is more specific than "*.x"."""
    wild = sorted((h for h in hosts if h[:2] in ("*.", "+.")), key=lambda h: (-len(h), h[0] != "+", h))
    exact = sorted(h for h in hosts if h != irt.ANY_HOST and h[:2] not in ("*.", "+."))
    return exact + wild + ([irt.ANY_HOST] if irt.ANY_HOST in hosts else [])


def _items(route: irt.Route, interned: dict[schema.Action, schema.Action]) -> tuple[_Item, ...]:
    items = []
    for rule in route.rules:
        action = schema.Action(
            backends=tuple(schema.WeightedCluster(b.cluster, b.weight, tuple(_filter(f) for f in b.filters))
                           for b in rule.backends),
            request_timeout_ms=rule.timeout_ms,
            backend_timeout_ms=rule.backend_timeout_ms,
            # A mirror whose backend could not be resolved is left out (translate reported it).
            filters=tuple(_filter(f) for f in rule.filters
                          if not isinstance(f, irt.RequestMirror) or f.cluster),
            retry=_retry(rule.retry),
        )
        action = interned.setdefault(action, action)
        source = f"{route.ref}#{rule.index}"
        for index, match in enumerate(rule.matches):
            items.append(_Item(_precedence(route, rule, index, match), _match(match), action, source))
    return tuple(items)


def _add_gateway(gateways: dict[tuple[str, int], str], sock: tuple[str, int], gateway: str) -> None:
    """The socket's label: its Gateways' names, sorted, comma-separated (usually one)."""
    have = gateways.get(sock)
    if not have:
        gateways[sock] = gateway
    elif gateway and gateway not in have.split(", "):
        gateways[sock] = ", ".join(sorted(have.split(", ") + [gateway]))


def _vhost(name: str, lists: tuple[tuple[_Item, ...], ...], gateway: str = "") -> schema.VirtualHost:
    items = [item for items in lists for item in items]
    items.sort(key=_by_key)
    index_of: dict[int, int] = {}  # id(interned action) → its index
    actions: list[schema.Action] = []
    entries = []
    for item in items:
        action = item.action
        index = index_of.get(id(action))
        if index is None:
            index = index_of[id(action)] = len(actions)
            actions.append(action)
        entries.append(schema.RouteEntry(match=item.match, action=index, source=item.source))
    return schema.VirtualHost(name=name, entries=tuple(entries), actions=tuple(actions), gateway=gateway)


def _by_key(item: _Item) -> tuple:
    return item.key


# --- filters: one function per IR kind, the table that picks it ------------------------


def _header_changes(f: irt.RequestHeaderModifier | irt.ResponseHeaderModifier) -> dict[str, tuple]:
    return {
        "set": tuple(schema.HeaderValue(h.name, h.value) for h in f.set),
        "add": tuple(schema.HeaderValue(h.name, h.value) for h in f.add),
        "remove": tuple(n.lower() for n in f.remove),  # workers compare lower-case names
    }


def _request_header_modifier(f: irt.RequestHeaderModifier) -> schema.RequestHeaderModifier:
    return schema.RequestHeaderModifier(**_header_changes(f))


def _response_header_modifier(f: irt.ResponseHeaderModifier) -> schema.ResponseHeaderModifier:
    return schema.ResponseHeaderModifier(**_header_changes(f))


def _request_redirect(f: irt.RequestRedirect) -> schema.RequestRedirect:
    path = f.path or _NO_PATH
    return schema.RequestRedirect(scheme=f.scheme, hostname=f.hostname, port=f.port,
                                  path_type=path.type, path=path.value, status=f.status_code)


def _url_rewrite(f: irt.URLRewrite) -> schema.URLRewrite:
    path = f.path or _NO_PATH
    return schema.URLRewrite(hostname=f.hostname, path_type=path.type, path=path.value)


def _request_mirror(f: irt.RequestMirror) -> schema.RequestMirror:
    return schema.RequestMirror(cluster=f.cluster, percent=f.percent)


def _request_header_template(f: irt.RequestHeaderTemplate) -> schema.RequestHeaderTemplate:
    return schema.RequestHeaderTemplate(set=tuple(schema.HeaderTemplate(h.name, template_parts(h.value))
                                                  for h in f.set))


def _cors(f: irt.CORS) -> schema.CORS:
    return schema.CORS(
        allow_origins=tuple(o.lower() for o in f.allow_origins),  # origins compare lower-case
        allow_methods=f.allow_methods,
        allow_headers=tuple(h.lower() for h in f.allow_headers),
        expose_headers=f.expose_headers,
        allow_credentials=f.allow_credentials,
        max_age=f.max_age,
    )


# Every IR kind that reaches compile. ExtensionRef never does: translate answers
# its rule with 500 instead (tests/control/test_ir.py checks this against both unions).
FILTERS: dict[type, Callable[[Any], schema.Filter]] = {
    irt.RequestHeaderModifier: _request_header_modifier,
    irt.ResponseHeaderModifier: _response_header_modifier,
    irt.RequestRedirect: _request_redirect,
    irt.URLRewrite: _url_rewrite,
    irt.RequestMirror: _request_mirror,
    irt.RequestHeaderTemplate: _request_header_template,
    irt.CORS: _cors,
}
_NO_PATH = irt.PathModifier(type="", value="")


def _filter(f: irt.Filter) -> schema.Filter:
    return FILTERS[type(f)](f)


_PLACEHOLDER = re.compile(r"%\{([a-z_]+)(?::([^{}]*))?\}")


def template_parts(value: str) -> tuple[schema.TemplatePart, ...]:
    """``"ip=%{client_ip}"`` as parts: text, then the value to fill in
    (placeholders were validated by translate)."""
    parts: list[schema.TemplatePart] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(value):
        if m.start() > pos:
            parts.append(schema.TemplatePart("text", value[pos:m.start()]))
        kind, arg = m.group(1), m.group(2) or ""
        parts.append(schema.TemplatePart(kind, arg.lower() if kind == "header" else arg))
        pos = m.end()
    if pos < len(value):
        parts.append(schema.TemplatePart("text", value[pos:]))
    return tuple(parts)


def _retry(r: irt.Retry | None) -> schema.RetryPolicy | None:
    if r is None or r.attempts < 1:
        return None
    return schema.RetryPolicy(attempts=r.attempts, codes=tuple(sorted(set(r.codes))),
                              connect_failure=r.connect_failure, reset=r.reset, backoff_ms=r.backoff_ms)


def _precedence(route: irt.Route, rule: irt.Rule, index: int, match: irt.RouteMatch) -> tuple:
    path = match.path
    value = normalize_prefix(path.value) if path.type == "PathPrefix" else path.value
    created = (0, route.created) if route.created is not None else (1, 0.0)
    return (
        _PATH_RANK[path.type],
        -len(value),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query),
        created,
        f"{route.namespace}/{route.name}",
        route.kind,
        rule.index,
        index,
    )


def _match(m: irt.RouteMatch) -> schema.Match:
    value = m.path.value
    if m.path.type != "RegularExpression":
        value = canonical_path(value)
    if m.path.type == "PathPrefix":
        value = normalize_prefix(value)
    return schema.Match(
        path=_PATH_TYPES[m.path.type](value),
        method=m.method,
        headers=tuple(schema.HeaderMatch(h.name, h.value, h.type) for h in m.headers),
        query=tuple(schema.QueryMatch(q.name, q.value, q.type) for q in m.query),
    )


# --- dumping ------------------------------------------------------------------------


def table_to_builtins(table: schema.CompiledTable) -> dict[str, Any]:
    """The compiled table as plain data keyed by field name (array_like structs
    encode positionally, which is unreadable in a golden file or /debug)."""
    return named(table)
