"""The request head: checked once, typed once, and what goes upstream made from it.

``HeadReader.read`` turns what the parser collected for one request (its
method, target, version and header pairs) into a ``Request``, or refuses it
by raising ``Refused(status, reason)``. A ``Request`` is made once per
request and never reused; the parser's buffers it is made from are reset in
one place, by the protocol, when it hands them over. Filters read and edit
the ``Request`` (``forward`` header lines, ``target``, ``host_out``); then
``upstream_head`` frames the head the upstream gets, in one join.

Strictness (issue 4): llhttp refuses bad framing (CL with TE, bad chunk
sizes, bare CR/LF, obs-fold, bad name characters); this module refuses what
llhttp leaves to the server, in this order: a head or header count over the
limits (431), versions other than 1.0/1.1 (505; HTTP/0.9 400), CONNECT (405),
a second Host (400), Transfer-Encoding other than a plain ``chunked`` (501),
underscores in names (per FLUXGATE_UNDERSCORE_HEADERS), TE in HTTP/1.0 (400),
a Content-Length over the body limit (413), an unknown expectation (417), no
Host in HTTP/1.1 (400), an invalid or userinfo-bearing target or a Host that
disagrees with an absolute-form one (400), a path that cannot be normalised
(400; common/path.py), and, when the request is routed, an invalid Host
(``host_key``, 400).

Forwarding rules: hop-by-hop headers (and what Connection names) are
dropped, Host, framing and X-Forwarded-* are set by the proxy
(``dataplane/headers.py`` classifies names); everything else goes upstream
as it came, in order. The path goes upstream in its normal form. While
tracing is on, the client's ``traceparent`` is replaced by the tracer's
(dataplane/tracing.py); ``tracestate`` always passes as it came.

Per-connection state lives in the ``HeadReader``: what keep-alive clients
repeat (the last path found normal, the last valid Host, the X-Forwarded-*
lines for the last Host) is remembered, so a repeated request skips that work.
"""

from __future__ import annotations

import re

import httptools

from common.path import PathError
from common.path import is_normal as _normal_path
from common.path import normalize as normalize_path
from dataplane import headers as hdr
from dataplane import requestid, responses
from dataplane.headers import (CONNECTION, EXPECT, HOST, LENGTH, PASS, RID, TE, TRACEPARENT, TRACESTATE, UA,
                               UNDERSCORE, UPGRADE, XFF, nominated)

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
# A Host header value: reg-name (as DNS and IP addresses use it) or an IP
# literal, and an optional port.
_HOST = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?$")
_TWO_TRACEPARENTS = b"two traceparent headers"  # not one context: invalid (W3C trace context 3.2)


class Refused(Exception):
    """The request cannot be served: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Request:
    """One request's head, as checked; then as the filters leave it.

    As received: ``method``, ``target`` (the normalised path and the query,
    what goes upstream unless rewritten), ``path``, ``query``, ``host`` (as
    sent, or from an absolute-form target), ``headers`` (every name/value
    pair, for matching and templates), ``client``, ``scheme``, ``port`` (the
    listener's), and the framing facts. ``forward`` is the header lines that
    go upstream ("Name: value\\r\\n" each). Filters may edit ``forward``,
    ``target`` and ``host_out``, and set ``prefix`` (the route's matched
    prefix, for rewrites and redirects) and ``mirrors``.

    Trace context (dataplane/tracing.py): ``traceparent`` is the one the
    upstream gets (the client's while tracing is off, the tracer's when on),
    ``trace_in`` the client's, ``tracestate`` the client's (it always passes
    unchanged), ``sampled`` whether this request's span is recorded.
    """

    __slots__ = (
        "method", "target", "path", "query", "host", "headers", "forward", "length", "chunked",
        "http10", "keep_alive", "keep_local", "head_only", "expect_continue", "upgrade", "xff",
        "has_body", "client", "scheme", "port", "prefix", "host_out", "mirrors", "answer",
        "request_id", "rid_new", "user_agent", "traceparent", "trace_in", "tracestate", "sampled",
    )

    def __init__(self, method: bytes, target: bytes, path: bytes, query: bytes, host: bytes,
                 headers: list, forward: list, reader: "HeadReader") -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.host = host
        self.headers = headers
        self.forward = forward
        self.client = reader.client
        self.scheme = reader.scheme
        self.port = reader.port
        self.prefix = b""
        self.host_out = None  # the Host sent upstream, when a filter changes it
        self.mirrors = ()  # ClusterStates a RequestMirror filter sends a copy to
        self.answer = None  # a complete response the gateway gives instead of proxying



class HeadReader:
    """One client connection's request heads (see the module docstring)."""

    __slots__ = ("limits", "client", "scheme", "port", "tracer", "_normal_last", "_host_ok", "_fwd_host", "_fwd")

    def __init__(self, limits, client: bytes, scheme: bytes, port: int, tracer=None) -> None:
        self.limits = limits  # dataplane/limits.py
        self.client = client
        self.scheme = scheme
        self.port = port  # a redirect without a port keeps the listener's
        self.tracer = tracer  # dataplane/tracing.py's Tracer, or None: tracing off
        self._normal_last = b"/"  # the last request path found already normal
        self._host_ok = None  # the last Host found valid
        self._fwd_host, self._fwd = None, b""  # the last Host's X-Forwarded-* lines

    def read(self, parser, url: bytes, headers: list, head_seen: int, closing: bool) -> Request:
        """The Request for the head the parser just completed (``url`` and
        ``headers`` as collected); ``closing``: the connection will not be
        kept whatever the client asks. Raises ``Refused``."""
        method = parser.get_method()
        version = parser.get_http_version()
        # One test for the usual request; the unusual ones are looked at closely.
        if version != "1.1" or head_seen > self.limits.max_header_bytes \
                or len(headers) > self.limits.max_header_count or method == b"CONNECT":
            self._unusual(version, method, url, headers, head_seen)
        http10 = version == "1.0"
        keep_alive = parser.should_keep_alive() and not closing
        host = xff = conn = length = expect = upgrade = rid = None
        ua = trace = state = b""
        chunked = False
        tracer = self.tracer
        forward = []
        classes = hdr.request_class
        for name, value in headers:
            code = classes.get(name)
            if code is None:
                code = hdr.classify_request(name)
            if code == PASS:
                forward.append(b"%s: %s\r\n" % (name, value))
            elif code == HOST:
                if host is not None:
                    raise Refused(400, "more than one Host header")  # RFC 9112 3.2
                host = value
            elif code == XFF:
                xff = value if xff is None else xff + b", " + value
            elif code == TE:
                # llhttp checked that chunked comes last; a coding before it
                # (gzip, chunked), a repeat, or even trailing whitespace (which
                # some parsers read as another coding) could be read otherwise
                # upstream: only a plain "chunked" is served (Envoy: 501).
                if chunked or value.lower() != b"chunked":
                    raise Refused(501, "Transfer-Encoding other than chunked")
                chunked = True
            elif code == CONNECTION:
                conn = value
            elif code == LENGTH:
                length = value
            elif code == EXPECT:
                expect = value
            elif code == UPGRADE:
                upgrade = value
            elif code == UA:
                forward.append(b"%s: %s\r\n" % (name, value))
                ua = value
            elif code == TRACEPARENT:
                if tracer is None:  # tracing off: it passes unchanged; on, the tracer sends its own
                    forward.append(b"%s: %s\r\n" % (name, value))
                trace = value if not trace else _TWO_TRACEPARENTS
            elif code == TRACESTATE:
                forward.append(b"%s: %s\r\n" % (name, value))
                state = value if not state else state + b"," + value  # W3C: one list over the lines
            elif code == RID:
                if rid is None and requestid.valid(value):
                    rid = value  # the first valid one; the others are not sent on
            elif code == UNDERSCORE:
                policy = self.limits.underscore_headers
                if policy == "allow":
                    forward.append(b"%s: %s\r\n" % (name, value))
                elif policy == "reject":
                    raise Refused(400, f"header name with an underscore: {name[:64]!r}")
        if conn is not None and conn.lower() not in _PLAIN_CONNECTION:
            drop = nominated(conn) - _PLAIN_CONNECTION
            if drop:
                forward = [h for h in forward if h.split(b":", 1)[0].lower() not in drop]
        if chunked and http10:
            raise Refused(400, "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 6.1
        has_body = chunked or (length is not None and length != b"0")
        if has_body and length is not None and self.limits.max_body_bytes \
                and int(length) > self.limits.max_body_bytes:
            raise Refused(413, "Content-Length over the body limit")
        # What the gateway answers itself keeps the connection only if the
        # body that may follow will be read: a client that sent
        # "Expect: 100-continue" may never send it, so close after those.
        keep_local = keep_alive
        expect_continue = False
        if expect is not None and not http10:  # RFC 9110 10.1.1: ignored in HTTP/1.0 (and not forwarded)
            if expect.lower() != b"100-continue":
                raise Refused(417, "unknown expectation")
            if has_body:
                # Answered here, as nginx and Envoy do: "100 Continue" goes out
                # when the exchange starts (so after the responses before it),
                # and only if the request is proxied; a local answer instead
                # closes the connection (the body may never come).
                expect_continue = True
                keep_local = False
        if host is None:
            if not http10:
                raise Refused(400, "no Host header")
            host = b""
        q = url.find(b"?")
        path, query = (url, b"") if q < 0 else (url[:q], url[q + 1:])
        if path[:1] != b"/":
            if path == b"*" and method == b"OPTIONS":
                pass
            else:
                host, path, query = _absolute_form(url, host)
                url = path + (b"?" + query if query else b"")
                q = url.find(b"?")
        answer = None
        # One spelling per resource before anything looks at the path; the
        # normal form is also what goes upstream (common/path.py). The last
        # path found normal is remembered: keep-alive clients repeat paths.
        if path != self._normal_last:
            if _normal_path(path) is not None:
                self._normal_last = path
            elif path != b"*":
                try:
                    norm, redirect = normalize_path(path, self.limits.escaped_slashes, self.limits.merge_slashes)
                except PathError as exc:
                    raise Refused(400, f"request path: {exc}") from None
                path = norm
                url = path + (b"?" + query if q >= 0 else b"")
                if redirect:  # escaped slashes: the client asks again with plain ones
                    location = path + (b"?" + query if query else b"")
                    answer = responses.redirect(307, location, not keep_local)
        req = Request(method, url, path, query, host, headers, forward, self)
        req.length = length
        req.chunked = chunked
        req.http10 = http10
        req.keep_alive = keep_alive
        req.keep_local = keep_local
        req.head_only = method == b"HEAD"
        req.expect_continue = expect_continue
        # A WebSocket handshake: the one upgrade passed on (h2c and others are not).
        req.upgrade = upgrade is not None and not http10 and upgrade.lower() == b"websocket" \
            and parser.should_upgrade()
        req.xff = xff
        req.has_body = has_body  # False: safe to send again on a fresh connection
        req.answer = answer
        req.user_agent, req.trace_in, req.tracestate = ua, trace, state
        if tracer is None:
            req.traceparent, req.sampled = trace, False
        else:  # this request's span: what the upstream gets; its flags say whether it is sampled
            req.traceparent = trace = tracer.start(trace)
            req.sampled = trace[54] == 49  # "1"
        req.rid_new = rid is None  # a repeat of these bytes (protocol._repeat) gets another
        req.request_id = requestid.new() if rid is None else rid
        return req

    def repeat(self, req: Request) -> Request:
        """``req`` again, for a repeat of its bytes (protocol._repeat): another request, its own id."""
        if req.rid_new:
            req.request_id = requestid.new()
        if self.tracer is not None:  # its own span (and, without a parent, its own trace)
            req.traceparent = trace = self.tracer.start(req.trace_in)
            req.sampled = trace[54] == 49
        return req

    def _unusual(self, version: str, method: bytes, url: bytes, headers: list, head_seen: int) -> None:
        """The checks most requests skip."""
        max_head = self.limits.max_header_bytes
        if head_seen > max_head and len(url) + sum(len(n) + len(v) + 4 for n, v in headers) > max_head:
            raise Refused(431, "request head too large")
        if len(headers) > self.limits.max_header_count:
            raise Refused(431, f"more than {self.limits.max_header_count} request headers")
        if version != "1.1" and version != "1.0":
            raise Refused(400 if version == "0.9" else 505, f"HTTP/{version} request")
        if method == b"CONNECT":
            raise Refused(405, "CONNECT is not served")

    def host_key(self, req: Request) -> bytes:
        """The Host as routing compares it: lower-case, without the port.
        Raises ``Refused`` for a Host that is not a valid authority."""
        host = req.host
        if host != self._host_ok:
            if (host or not req.http10) and _HOST.match(host) is None:  # HTTP/1.1 needs a Host
                raise Refused(400, "invalid Host header")
            self._host_ok = host
        key = host.lower()
        if key[-1:] != b"]":  # not a bare IPv6 literal: drop a port
            c = key.rfind(b":")
            if c >= 0:
                key = key[:c]
        return key

    def upstream_head(self, req: Request, host_rewrite: bytes) -> bytes:
        """The request line and headers the upstream gets, as one bytes."""
        host = req.host
        # The X-Forwarded-* lines depend only on the client, its Host and any
        # X-Forwarded-For it sent: made once per connection and Host.
        xff = req.xff
        if xff is None and host == self._fwd_host:
            forwarded = self._fwd
        else:
            forwarded = b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n" % (
                xff + b", " + self.client if xff else self.client, self.scheme, host)
            if xff is None:
                self._fwd_host, self._fwd = host, forwarded
        length = req.length
        traced = self.tracer is not None  # the client's traceparent is in forward when not
        return b"".join((
            req.method, b" ", req.target, b" HTTP/1.1\r\nhost: ", req.host_out or host_rewrite or host, b"\r\n",
            *req.forward,
            b"transfer-encoding: chunked\r\n" if req.chunked
            else b"content-length: " + length + b"\r\n" if length is not None else b"",
            forwarded, b"traceparent: " if traced else b"", req.traceparent if traced else b"",
            b"\r\n" if traced else b"", b"x-request-id: ", req.request_id, b"\r\n",
            b"connection: upgrade\r\nupgrade: websocket\r\n\r\n" if req.upgrade else b"\r\n",
        ))


def _absolute_form(url: bytes, host: bytes) -> tuple[bytes, bytes, bytes]:
    """(authority, path, query) of an absolute-form target (RFC 9112 3.2.2)."""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise Refused(400, "invalid request target") from None
    if parsed.schema is None or parsed.host is None:
        raise Refused(400, "invalid request target")
    if parsed.userinfo:
        raise Refused(400, "userinfo in the request target")  # RFC 9110 4.2.4
    authority = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
    if host and _authority(host) != _authority(authority):
        raise Refused(400, "Host disagrees with the absolute-form target")
    return authority, parsed.path or b"/", parsed.query or b""


def _authority(host: bytes) -> bytes:
    """A Host value compared as the origin server would: lower-case, no default port."""
    host = host.lower()
    return host[:-3] if host.endswith(b":80") else host
