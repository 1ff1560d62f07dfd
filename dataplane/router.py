"""The router of one table generation: host → virtual host → route entry → action.

Theory of operation: control already validated the table and sorted every
virtual host's entries by Gateway API precedence, so a worker never sorts or
validates; it only indexes. A ``Router`` is built once per generation from the
table index; a virtual host or cluster blob is decoded the first time a
request touches it and kept while its digest stays the same, across
generations. Per request the work is a few dict lookups:

* host: exact dict, then wildcard suffixes (most specific first), then the
  listener's default virtual host;
* path: exact-path dict, then prefixes by segment boundary (a dict per
  distinct prefix length), then regexes; each candidate carries its global
  precedence rank and the lowest rank whose method/header/query conditions
  hold wins.

Invariant: nothing here keeps a reference into shared memory after the
``Router`` itself is dropped, except the ``BlobRef``s of this generation,
which live exactly as long as the ``Router``.
"""

from __future__ import annotations

import bisect
import random
import re
from itertools import accumulate
from urllib.parse import parse_qsl

from shm import codec
from shm.schema import (
    Action, Cluster, PathExact, PathPrefix, RequestHeaderModifier, RequestRedirect,
    ResponseHeaderModifier, Table, URLRewrite,
)


class ClusterState:
    """A cluster's endpoints and its round-robin position (per worker)."""

    __slots__ = ("name", "endpoints", "host_rewrite", "_next")

    def __init__(self, cluster: Cluster) -> None:
        self.name = cluster.name
        self._next = 0
        self.update(cluster)

    def update(self, cluster: Cluster) -> None:
        """New endpoints for the same cluster (in place: vhosts hold this object)."""
        # (address, port): the pool's key, made once here, not per request.
        self.endpoints: tuple[tuple[str, int], ...] = tuple((e.address, e.port) for e in cluster.endpoints)
        self.host_rewrite = cluster.host_rewrite.encode()
        # Workers start at different offsets so N workers do not all hit endpoint 0.
        self._next = random.randrange(len(cluster.endpoints)) if cluster.endpoints else 0

    def pick(self, skip: tuple[str, int] | None = None) -> tuple[str, int] | None:
        """Round robin; ``skip`` avoids the endpoint that just failed (if another exists)."""
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps[0]
        if not n:
            return None
        i = self._next % n
        self._next = i + 1
        ep = eps[i]
        if ep == skip and n > 1:
            ep = eps[(i + 1) % n]
            self._next = i + 2
        return ep


class HeaderEdit:
    """A header modifier made ready to apply: names to drop, lines to append."""

    __slots__ = ("drop", "lines", "host")

    def __init__(self, mod) -> None:
        # "set" replaces every value: drop the name, then add the one line.
        self.drop = frozenset(h.name.lower().encode() for h in mod.set) | frozenset(
            n.encode() for n in mod.remove)
        sets = [h for h in mod.set if h.name.lower() != "host"]
        adds = [h for h in mod.add if h.name.lower() != "host"]
        self.lines = b"".join(b"%s: %s\r\n" % (h.name.encode(), h.value.encode()) for h in sets + adds)
        # Host is one header, framed by the proxy: "set" replaces it, add/remove cannot apply.
        host = [h.value for h in mod.set if h.name.lower() == "host"]
        self.host = host[0].encode() if host else None


class CompiledAction:
    """An Action with its weights and filters precomputed; clusters resolved per generation."""

    __slots__ = ("action", "clusters", "cumulative", "total", "timeout", "single",
                 "filtered", "request_edit", "response_edit", "redirect", "rewrite")

    def __init__(self, action: Action, clusters: list[ClusterState | None]) -> None:
        self.action = action
        live = [(c, b.weight) for c, b in zip(clusters, action.backends) if b.weight > 0]
        self.clusters = [c for c, _ in live]
        self.cumulative = list(accumulate(w for _, w in live))
        self.total = self.cumulative[-1] if live else 0
        self.timeout = action.request_timeout_ms / 1000.0
        # One live backend that resolved: no weighing per request.
        self.single = self.clusters[0] if len(self.clusters) == 1 else None
        self.request_edit = self.response_edit = self.redirect = self.rewrite = None
        for f in action.filters:
            if isinstance(f, RequestHeaderModifier):
                self.request_edit = HeaderEdit(f)
            elif isinstance(f, ResponseHeaderModifier):
                self.response_edit = HeaderEdit(f)
            elif isinstance(f, RequestRedirect):
                self.redirect = f
            elif isinstance(f, URLRewrite):
                self.rewrite = f
        self.filtered = bool(action.filters)  # the one test a request without filters pays

    def choose(self) -> ClusterState | None:
        """A cluster by weight; None means unresolved (the caller answers 500)."""
        if len(self.clusters) == 1:
            return self.clusters[0]
        if not self.total:
            return None
        return self.clusters[bisect.bisect_right(self.cumulative, random.random() * self.total)]


class _Candidate:
    __slots__ = ("rank", "method", "headers", "query", "action", "source", "prefix")

    def __init__(self, rank, match, action, source) -> None:
        self.rank = rank
        # The matched prefix, for ReplacePrefixMatch (compile stores it without a trailing "/").
        self.prefix = match.path.value.encode() if isinstance(match.path, PathPrefix) else b""
        self.method = match.method.encode()
        self.headers = tuple(
            (h.name.encode(), re.compile(h.value.encode()) if h.kind == "RegularExpression" else h.value.encode())
            for h in match.headers
        )
        self.query = tuple(
            (q.name, re.compile(q.value) if q.kind == "RegularExpression" else q.value)
            for q in match.query
        )
        self.action = action
        self.source = source

    def holds(self, method: bytes, req: "RequestView") -> bool:
        if self.method and method != self.method:
            return False
        if self.headers:
            have = req.header_map()
            for name, want in self.headers:
                got = have.get(name)
                if got is None:
                    return False
                if isinstance(want, bytes):
                    if got != want:
                        return False
                elif not want.fullmatch(got):
                    return False
        if self.query:
            params = req.query_map()
            for name, want in self.query:
                got = params.get(name)
                if got is None:
                    return False
                if isinstance(want, str):
                    if got != want:
                        return False
                elif not want.fullmatch(got):
                    return False
        return True


class RequestView:
    """What matching may read of a request; maps are built only if a rule asks."""

    __slots__ = ("headers", "query_string", "_hmap", "_qmap")

    def __init__(self, headers: list, query_string: bytes) -> None:
        self.headers = headers
        self.query_string = query_string
        self._hmap = None
        self._qmap = None

    def header_map(self) -> dict[bytes, bytes]:
        if self._hmap is None:
            m: dict[bytes, bytes] = {}
            for name, value in self.headers:
                key = name.lower()
                # Repeated headers compare as their comma-joined value (RFC 9110 5.3).
                m[key] = m[key] + b"," + value if key in m else value
            self._hmap = m
        return self._hmap

    def query_map(self) -> dict[str, str]:
        if self._qmap is None:
            m: dict[str, str] = {}
            for k, v in parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True):
                m.setdefault(k, v)  # first value wins, as Gateway API specifies
            self._qmap = m
        return self._qmap


class VirtualHostRouter:
    """Route entries of one virtual host, indexed for lookup."""

    __slots__ = ("name", "exact", "prefixes", "prefix_lengths", "regexes", "trivial")

    def __init__(self, vhost, router: "Router") -> None:
        self.name = vhost.name
        actions = [router.compile_action(a) for a in vhost.actions]
        self.exact: dict[bytes, list[_Candidate]] = {}
        self.prefixes: dict[bytes, list[_Candidate]] = {}
        self.regexes: list[tuple[re.Pattern, _Candidate]] = []
        for rank, e in enumerate(vhost.entries):
            cand = _Candidate(rank, e.match, actions[e.action], e.source)
            p = e.match.path
            if isinstance(p, PathExact):
                self.exact.setdefault(p.value.encode(), []).append(cand)
            elif isinstance(p, PathPrefix):
                self.prefixes.setdefault(p.value.encode(), []).append(cand)
            else:
                self.regexes.append((re.compile(p.value.encode()), cand))
        self.prefix_lengths = sorted({len(p) for p in self.prefixes}, reverse=True)
        # The common case - one unconditional catch-all - answers without a search.
        only = self.prefixes.get(b"/")
        self.trivial = (
            only[0] if not self.exact and not self.regexes and len(self.prefixes) == 1
            and not only[0].method and not only[0].headers and not only[0].query else None
        )

    def match(self, method: bytes, path: bytes, headers: list, query: bytes) -> _Candidate | None:
        """The highest-precedence entry whose conditions hold, or None."""
        if self.trivial is not None:
            return self.trivial
        req = RequestView(headers, query)
        best: _Candidate | None = None
        for cand in self.exact.get(path, ()):
            if cand.holds(method, req):
                best = cand
                break
        n = len(path)
        for length in self.prefix_lengths:
            if length > n:
                continue
            # Segment-aware: "/a" matches "/a" and "/a/b", never "/ab".
            if length > 1 and n > length and path[length] != 47:  # "/"
                continue
            for cand in self.prefixes.get(path[:length], ()):
                if best is not None and cand.rank > best.rank:
                    break
                if cand.holds(method, req):
                    best = cand
                    break
        for pattern, cand in self.regexes:
            if (best is None or cand.rank < best.rank) and pattern.fullmatch(path) and cand.holds(method, req):
                best = cand
        return best


class Router:
    """The routing view of one table generation."""

    def __init__(self, table: Table, previous: "Router | None" = None) -> None:
        self.generation = table.generation
        self.table = table
        self._vhost_refs = table.vhosts
        self._cluster_refs = {r.name: r for r in table.clusters}
        # Decoded objects survive a swap while their bytes are unchanged. A
        # changed cluster is updated in place, so the virtual hosts that hold
        # it stay valid and an endpoint change costs one cluster decode.
        self._cluster_cache: dict[str, tuple[int, ClusterState]] = {}
        if previous is not None:
            for name, (digest, state) in previous._cluster_cache.items():
                ref = self._cluster_refs.get(name)
                if ref is None:
                    continue  # gone: every vhost naming it changed, so is rebuilt
                if ref.digest != digest:
                    state.update(codec.decode_cluster(ref.blob))
                self._cluster_cache[name] = (ref.digest, state)
        digests = {r.name: r.digest for r in table.vhosts}
        self._vhost_cache: dict[str, tuple[int, VirtualHostRouter]] = {
            n: v for n, v in (previous._vhost_cache.items() if previous else ())
            if digests.get(n) == v[0]
        }
        self._decoded: list[VirtualHostRouter | None] = [None] * len(table.vhosts)
        self._hosts: dict[str, tuple[dict[bytes, int], list[tuple[bytes, int]], int]] = {}
        for lst in table.listeners:
            self._hosts[lst.name] = (
                {h.host.encode(): h.vhost for h in lst.exact},
                [(h.host[1:].encode(), h.vhost) for h in lst.wildcards],  # ".example.com"
                lst.default_vhost,
            )

    def listener_names(self) -> list[str]:
        return list(self._hosts)

    def vhost(self, listener: str, host: bytes) -> VirtualHostRouter | None:
        entry = self._hosts.get(listener)
        if entry is None:
            return None
        exact, wildcards, default = entry
        i = exact.get(host, -1)
        if i < 0:
            for suffix, j in wildcards:
                # "*.example.com" matches "a.example.com" and "a.b.example.com", not "example.com".
                if host.endswith(suffix) and len(host) > len(suffix):
                    i = j
                    break
            else:
                i = default
        if i < 0:
            return None
        vh = self._decoded[i]
        if vh is None:
            vh = self._decode_vhost(i)
        return vh

    def _decode_vhost(self, i: int) -> VirtualHostRouter:
        ref = self._vhost_refs[i]
        hit = self._vhost_cache.get(ref.name)
        if hit is not None and hit[0] == ref.digest:
            vh = hit[1]
        else:
            vh = VirtualHostRouter(codec.decode_vhost(ref.blob), self)
            self._vhost_cache[ref.name] = (ref.digest, vh)
        self._decoded[i] = vh
        return vh

    def cluster(self, name: str) -> ClusterState | None:
        """The cluster's state, decoded on first use; None if unresolved."""
        hit = self._cluster_cache.get(name)
        if hit is not None:
            return hit[1]
        ref = self._cluster_refs.get(name)
        if ref is None:
            return None
        state = ClusterState(codec.decode_cluster(ref.blob))
        self._cluster_cache[name] = (ref.digest, state)
        return state

    def compile_action(self, action: Action) -> CompiledAction:
        return CompiledAction(action, [self.cluster(b.cluster) for b in action.backends])

    def route(self, listener: str, host: bytes, method: bytes, path: bytes, headers: list, query: bytes):
        """The winning route entry (``.action``, ``.source``) or None (404)."""
        vh = self.vhost(listener, host)
        if vh is None:
            return None
        return vh.match(method, path, headers, query)
