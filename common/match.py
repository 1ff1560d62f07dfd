"""Request matching over a table's virtual hosts: one implementation for all.

Workers route with it, and the control process's request explainer
(``/debug/route``) asks it why, so the explainer can never say one thing
while workers do another. Pure: stdlib and the schema only.

Theory of operation: control already sorted every virtual host's entries by
Gateway API precedence, so an entry's position is its rank. ``PathIndex``
indexes them by path (exact dict; prefixes by length, segment-aware;
regexes), each candidate carrying its rank; the lowest-ranked candidate
whose method, header and query conditions hold wins. ``HostIndex`` maps a
listener's hosts to virtual hosts: exact, then wildcard suffixes (most
specific first), then the listener's default. What an entry *does* is the
caller's: ``PathIndex`` takes a function from RouteEntry to payload, stored
as ``Candidate.action`` (workers store their compiled action there).
"""

from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import parse_qsl

# The table's structs (shm.schema) are read by field and tag only: common/
# imports nothing of FluxGate's, so both sides can use it (tests/test_imports.py).
RouteEntry = VirtualHost = Listener = Any


def path_kind(path) -> str:
    """The tag of a schema path match: "Exact", "PathPrefix" or "RegularExpression"."""
    return type(path).__struct_config__.tag


class Candidate:
    """One route entry as matching sees it: its rank, conditions and payload."""

    __slots__ = ("rank", "method", "headers", "query", "action", "source", "prefix", "entry")

    def __init__(self, rank: int, entry: RouteEntry, action: Any) -> None:
        match, source = entry.match, entry.source
        self.entry = entry
        self.rank = rank
        # The matched prefix, for ReplacePrefixMatch (compile stores it without a trailing "/").
        self.prefix = match.path.value.encode() if path_kind(match.path) == "PathPrefix" else b""
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

    def _failure(self, method: bytes, req: "RequestView") -> tuple | None:
        """The first condition that does not hold, as a small tuple, or None.

        One implementation serves routing (``holds``) and explaining
        (``why_not``); only the explainer turns the tuple into words.
        """
        if self.method and method != self.method:
            return ("method", self.method, None)
        if self.headers:
            have = req.header_map()
            for name, want in self.headers:
                got = have.get(name)
                if got is None or (got != want if isinstance(want, bytes) else not want.fullmatch(got)):
                    return ("header", name, want if got is not None else None)
        if self.query:
            params = req.query_map()
            for name, want in self.query:
                got = params.get(name)
                if got is None or (got != want if isinstance(want, str) else not want.fullmatch(got)):
                    return ("query", name, want if got is not None else None)
        return None

    def holds(self, method: bytes, req: "RequestView") -> bool:
        return self._failure(method, req) is None

    def why_not(self, method: bytes, req: "RequestView") -> str:
        """"" if the conditions hold, else the first that does not (for people)."""
        failure = self._failure(method, req)
        if failure is None:
            return ""
        kind, name, want = failure
        if kind == "method":
            return f"method must be {name.decode()}"
        label = f"header {name.decode()}" if kind == "header" else f"query parameter {name}"
        if want is None:
            return f"{label} is missing"
        if isinstance(want, (bytes, str)):
            shown = want.decode() if isinstance(want, bytes) else want
            return f"{label} must be {shown!r}"
        pattern = want.pattern.decode() if isinstance(want.pattern, bytes) else want.pattern
        return f"{label} must match {pattern!r}"

    def path_matches(self, path: bytes) -> bool:
        p = self.entry.match.path
        value = p.value.encode()
        if path_kind(p) == "Exact":
            return path == value
        if path_kind(p) == "PathPrefix":
            n = len(value)
            return path.startswith(value) and (n <= 1 or len(path) == n or path[n] == 47)
        return re.fullmatch(value, path) is not None

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


class PathIndex:
    """Route entries of one virtual host, indexed for lookup."""

    __slots__ = ("name", "exact", "prefixes", "prefix_lengths", "regexes", "trivial", "candidates")

    def __init__(self, vhost: VirtualHost, payload: Callable[[RouteEntry], Any]) -> None:
        self.name = vhost.name
        self.exact: dict[bytes, list[Candidate]] = {}
        self.prefixes: dict[bytes, list[Candidate]] = {}
        self.regexes: list[tuple[re.Pattern, Candidate]] = []
        self.candidates: list[Candidate] = []
        for rank, e in enumerate(vhost.entries):
            cand = Candidate(rank, e, payload(e))
            self.candidates.append(cand)
            p = e.match.path
            if path_kind(p) == "Exact":
                self.exact.setdefault(p.value.encode(), []).append(cand)
            elif path_kind(p) == "PathPrefix":
                self.prefixes.setdefault(p.value.encode(), []).append(cand)
            else:
                self.regexes.append((re.compile(p.value.encode()), cand))
        self.prefix_lengths = sorted({len(p) for p in self.prefixes}, reverse=True)
        # The common case - one unconditional catch-all - answers without a search.
        only = self.prefixes.get(b"/")
        self.trivial = (
            only[0] if only is not None and not self.exact and not self.regexes and len(self.prefixes) == 1
            and not only[0].method and not only[0].headers and not only[0].query else None
        )

    def match(self, method: bytes, path: bytes, headers: list, query: bytes) -> Candidate | None:
        """The highest-precedence entry whose conditions hold, or None."""
        if self.trivial is not None:
            return self.trivial
        req = RequestView(headers, query)
        best: Candidate | None = None
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




def explain(index: PathIndex, method: bytes, path: bytes, headers: list, query: bytes):
    """The entry ``index.match`` picks, and each higher-ranked entry whose path
    matched but whose conditions did not hold, with the reason."""
    req = RequestView(headers, query)
    passed_over: list[tuple[Candidate, str]] = []
    for cand in index.candidates:  # in rank order
        if not cand.path_matches(path):
            continue
        why = cand.why_not(method, req)
        if not why:
            return cand, passed_over
        passed_over.append((cand, why))
    return None, passed_over


class HostIndex:
    """A listener's host table: which virtual host serves a Host."""

    __slots__ = ("exact", "wildcards", "default")

    def __init__(self, listener: Listener) -> None:
        self.exact = {h.host.encode(): h.vhost for h in listener.exact}
        # (".example.com", vhost, one label only), most specific first (compile's order)
        self.wildcards = [(h.host[1:].encode(), h.vhost, h.single_label) for h in listener.wildcards]
        self.default = listener.default_vhost

    def lookup(self, host: bytes) -> int:
        """The virtual host index for a lower-case host without port, or -1."""
        i = self.exact.get(host, -1)
        if i >= 0:
            return i
        for suffix, j, single in self.wildcards:
            # "*.example.com" matches "a.example.com" and "a.b.example.com", not "example.com";
            # a single-label one (Ingress) only "a.example.com".
            if host.endswith(suffix) and len(host) > len(suffix) and not (
                    single and b"." in host[:-len(suffix)]):
                return j
        return self.default

    def explain(self, host: bytes) -> tuple[int, str]:
        """``lookup`` with the reason, for people."""
        if host in self.exact:
            return self.exact[host], f"exact hostname {host.decode()}"
        for suffix, j, single in self.wildcards:
            if host.endswith(suffix) and len(host) > len(suffix) and not (
                    single and b"." in host[:-len(suffix)]):
                return j, f"wildcard hostname *{suffix.decode()}" + (" (one label)" if single else "")
        if self.default >= 0:
            return self.default, "the listener's catch-all (no hostname restricts it)"
        return -1, "no hostname of this listener matches"
