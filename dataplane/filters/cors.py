"""The CORS filter (Gateway API HTTPCORSFilter), compiled once per generation.

Theory of operation: a request of a route with this filter that carries an
``Origin`` is either a preflight (OPTIONS with Access-Control-Request-Method),
which the gateway answers itself and never forwards, or an actual request,
whose response gets the CORS headers. The upstream's own
Access-Control-Allow-Origin / -Credentials / -Expose-Headers are removed from
that response: the route's policy is the only one a browser sees.

Rules that must stay true:
* An origin not allowed gets no Access-Control-Allow-Origin at all (a
  preflight still gets 200, so the browser's own check fails it).
* An allowed origin is always echoed, never answered with "*": that is valid
  with and without credentials, and lets ``Vary: Origin`` keep caches honest.
* ``*`` in allowMethods / allowHeaders echoes what the preflight asked for,
  which is also the only form valid with credentials.
"""

from __future__ import annotations

import re

from dataplane import responses
from dataplane.filters.base import Filter
from dataplane.headers import drop_from_block, header_value
from shm import schema
from shm.schema import CORS

_MANAGED = frozenset({b"access-control-allow-origin", b"access-control-allow-credentials",
                      b"access-control-expose-headers"})


class ResponseEdit:
    """A response header edit made per request (the shape of headers.HeaderEdit)."""

    __slots__ = ("drop", "lines")

    def __init__(self, drop: frozenset[bytes], lines: bytes) -> None:
        self.drop = drop
        self.lines = lines


_REJECTED = ResponseEdit(_MANAGED, b"")


def _origin_pattern(origin: str) -> re.Pattern[bytes]:
    """``https://*.bar.com`` matches ``https://a.b.bar.com`` (any number of labels)."""
    scheme, _, host = origin.partition("://")
    if host.startswith("*."):
        body = r"[^/:]+\." + re.escape(host[2:])
    else:
        body = re.escape(host)
    return re.compile(("^" + re.escape(scheme) + "://" + body + "$").encode())


class CorsPolicy:
    __slots__ = ("any_origin", "exact", "patterns", "methods", "any_method", "headers", "any_header",
                 "credentials", "max_age", "expose", "_edit_tail")

    def __init__(self, f: CORS) -> None:
        self.any_origin = "*" in f.allow_origins
        self.exact = frozenset(o.encode() for o in f.allow_origins if "*" not in o)
        self.patterns = tuple(_origin_pattern(o) for o in f.allow_origins if "*" in o and o != "*")
        self.any_method = "*" in f.allow_methods
        self.methods = ", ".join(f.allow_methods).encode()
        self.any_header = "*" in f.allow_headers
        self.headers = ", ".join(f.allow_headers).encode()
        self.credentials = f.allow_credentials
        self.max_age = b"%d" % f.max_age
        self.expose = ", ".join(f.expose_headers).encode()
        # What every allowed response gets after its Access-Control-Allow-Origin line.
        self._edit_tail = (
            (b"access-control-allow-credentials: true\r\n" if self.credentials else b"")
            + (b"access-control-expose-headers: %s\r\n" % self.expose if self.expose else b"")
            + b"vary: origin\r\n"
        )

    def allows(self, origin: bytes) -> bool:
        if self.any_origin:
            return True
        origin = origin.lower()
        return origin in self.exact or any(p.match(origin) for p in self.patterns)

    def preflight(self, origin: bytes, method: bytes, headers: bytes | None) -> bytes:
        """The header lines of the answer to a preflight ("" when not allowed)."""
        if not self.allows(origin):
            return b""
        lines = [b"access-control-allow-origin: %s\r\n" % origin]
        methods = method if self.any_method else self.methods
        if methods:
            lines.append(b"access-control-allow-methods: %s\r\n" % methods)
        allowed = (headers or b"") if self.any_header else self.headers
        if allowed:
            lines.append(b"access-control-allow-headers: %s\r\n" % allowed)
        lines.append(b"access-control-max-age: %s\r\n" % self.max_age)
        lines.append(self._edit_tail)
        return b"".join(lines)

    def response_edit(self, origin: bytes) -> ResponseEdit:
        """The edit for the response to an actual request from ``origin``."""
        if not self.allows(origin):
            return _REJECTED
        return ResponseEdit(_MANAGED, b"access-control-allow-origin: %s\r\n%s" % (origin, self._edit_tail))


class CorsFilter(Filter):
    """A preflight is answered here; an actual request's response gets the CORS headers."""

    SPEC = schema.CORS
    REQUEST = True
    RESPONSE = True
    __slots__ = ("policy",)

    def __init__(self, spec: CORS, resolve=None) -> None:
        self.policy = CorsPolicy(spec)

    def request(self, req) -> bytes | None:
        if req.method != b"OPTIONS":
            return None
        headers = req.headers
        origin = header_value(headers, b"origin")
        if not origin:
            return None
        wanted = header_value(headers, b"access-control-request-method")
        if not wanted:
            return None  # an actual OPTIONS request, proxied
        # A preflight: answered here, never forwarded.
        lines = self.policy.preflight(origin, wanted, header_value(headers, b"access-control-request-headers"))
        return responses.preflight(lines, not req.keep_local)

    def response(self, req, block: bytes) -> bytes:
        origin = header_value(req.headers, b"origin")
        if not origin:
            return block
        edit = self.policy.response_edit(origin)
        return drop_from_block(block, edit.drop) + edit.lines
