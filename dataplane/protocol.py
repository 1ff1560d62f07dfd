"""The downstream HTTP/1.1 connection: the httptools parser's callback target.

State by lifetime:
* process    - ``worker`` (router, pool, settings), ``loop``, ``listener``
* connection - transport, parser, client address, the exchange being proxied
               (``active``), pipelined exchanges waiting (``queue``), what
               blocks reading (``_blocked``), the ``deadline``
* request    - url, headers, the exchange being parsed (``current``); url
               and headers are reset in exactly one place, where
               ``on_headers_complete`` takes them

Theory of operation: bytes go to the parser; callbacks collect the request
line and headers; on headers complete the request is routed and an Exchange
is made (or a local response such as 404). Exchanges start in request order:
the first one after ``feed_data`` returns (so a small request's head and body
reach the upstream in one write), the next one when the previous is done.
Responses are written by the upstream side to this transport, through the
worker's outbox (``dataplane/outbox.py``) like every other socket write.

Reading is paused while anything in ``_blocked`` is set: the upstream is not
keeping up with the request body, a body is buffering before its upstream
connection exists, or too many pipelined requests are queued.

Strictness (issue 4): llhttp refuses bad framing (CL with TE, bad chunk
sizes, bare CR/LF, obs-fold, bad name characters); this module adds what
llhttp leaves to the server: versions other than 1.0/1.1 (505, HTTP/0.9 400),
TE in HTTP/1.0, missing/duplicate/invalid Host, a Host that disagrees with an
absolute-form target, CONNECT (405), underscores in names (per setting),
unknown expectations (417), and the limits (414 line, 431 head or count,
413 body). Every such refusal goes through ``_reject``: it is answered in
order and the connection closes, since nothing after it can be trusted.

Deadlines: one per connection (``deadline``, what it is for in
``_deadline_kind``), checked by the worker's sweep (``check_deadline``) on a
coarse clock, not a timer per request: the head must arrive within
``header_timeout`` of its first byte (or of the connection's start),
dribbling does not extend it; a body may pause at most ``body_timeout``; the
whole request must arrive within ``request_timeout``; an idle keep-alive
connection closes after ``keepalive_timeout``; an exchange waiting for its
response head is failed with 504 after ``upstream_response_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import deque

import httptools

from dataplane import responses
from dataplane.exchange import Exchange
from common.path import PathError
from common.path import normalize as normalize_path
from common.path import is_normal as _normal_path
from dataplane.mirror import Mirror
from dataplane import headers as hdr
from dataplane.headers import (
    CONNECTION, EXPECT, HOST, LENGTH, PASS, TE, UNDERSCORE, UPGRADE, XFF, header_value, nominated,
)

log = logging.getLogger("fluxgate.protocol")

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
_INF = float("inf")
_HEAD, _BODY, _IDLE = 1, 2, 3  # what a connection's deadline is for
# A Host header value: reg-name (as DNS and IP addresses use it) or an IP
# literal, and an optional port.
_HOST = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?$")


class _Refused(Exception):
    """Raised from a parser callback after ``_reject``: stop parsing this stream."""


class HttpProtocol(asyncio.Protocol):
    BLOCK_UPSTREAM = 1
    BLOCK_BODY = 2
    BLOCK_PIPELINE = 4

    def __init__(self, worker, listener: str) -> None:
        # process
        self.worker = worker
        self.loop = worker.loop
        self.outbox = worker.outbox
        self.listener = listener
        self.scheme = b"http"
        # connection
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = b""
        self.local_port = 0
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.deadline = _INF  # see the module docstring; checked by check_deadline
        self._deadline_kind = _HEAD
        self._request_deadline = _INF  # the whole request must have arrived by then
        self._blocked = 0
        self._closed = False
        self._parse_error = False
        self._overloaded = False  # over the worker's connection limit: answer 503 and close
        self._in_head = False  # between a request's first byte and its headers' end
        self._head_seen = 0  # bytes received while in the head (an upper bound)
        self._chunk_len = 0  # the size of the data being parsed
        self._body_seen = 0  # bytes of the current request body
        self.tunnel = None  # the UpstreamConnection of an open WebSocket tunnel
        # Settings read per request, kept here: one lookup instead of three.
        settings = worker.settings
        self.pool = worker.pool  # its ``now`` is the worker's coarse clock
        self._header_timeout = min(settings.header_timeout, settings.request_timeout or _INF)
        self._max_head = settings.max_header_bytes
        self._max_count = settings.max_header_count
        self._max_line = settings.max_request_line_bytes
        self._keepalive = settings.keepalive_timeout
        self.request_started = 0.0
        self._normal_last = b"/"  # the last request path found already normal
        self._early = b""  # tunnel bytes the client sent before the upstream's 101
        self._vh_gen, self._vh_host, self._vh = -1, None, None  # the last Host's virtual host
        self._fwd_host, self._fwd = None, b""  # the last Host's X-Forwarded-* lines
        # request
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.current: Exchange | None = None

    # --- connection -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = peer[0].encode() if peer else b""
        local = transport.get_extra_info("sockname")
        self.local_port = local[1] if local else 0  # a redirect without a port keeps it
        worker = self.worker
        worker.connections.add(self)
        if len(worker.connections) > worker.settings.max_connections_per_worker:
            self._overloaded = True
        # The first request's head is due within header_timeout of the connection's start.
        self.deadline = worker.pool.now + worker.settings.header_timeout
        self._deadline_kind = _HEAD

    def connection_lost(self, exc) -> None:
        self._closed = True
        self.worker.connections.discard(self)
        if self.active is not None:
            self.active.abandon()
        for ex in self.queue:
            ex.abandon()
        self.queue.clear()
        self.active = self.current = None
        # The parser holds this protocol (its callbacks): a cycle that only the
        # worker's rare full collections would free, keeping with it the
        # virtual host this connection last used - a whole table generation
        # per connection after a swap. Broken here, the connection is freed
        # by reference counting as soon as it is closed.
        self.parser = None
        self._vh_gen, self._vh_host, self._vh = -1, None, None

    def data_received(self, data: bytes) -> None:
        if self._parse_error:
            # Past an upgrade, bytes are the tunnel's; past a refusal, nothing is parsed.
            if self.tunnel is not None:
                self.tunnel.write(data)
            return
        self._chunk_len = n = len(data)
        if self._in_head:
            self._head_seen += n
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The bytes after this request are not HTTP. A WebSocket handshake
            # becomes a tunnel if the upstream answers 101 (until then they
            # wait here); any other upgrade is answered, then the connection
            # closes.
            self._parse_error = True
            self._in_head = False
            ex = self.current
            if ex is not None:
                ex.keep_alive = False
                if ex.upgrade:
                    self._early = data[exc.args[0]:] if exc.args else b""
                if not ex.req_done:
                    ex.request_finished()
            self.block_reading(self.BLOCK_PIPELINE)
        except httptools.HttpParserError as exc:
            if not self._parse_error:  # else a callback refused the request already
                self._reject(400, str(exc))
        else:
            if self._in_head and self._head_seen > self.worker.settings.max_header_bytes:
                # Still no end of the head, and already too much of it.
                self._reject(431, "request head too large")
        active = self.active
        if active is not None and not active.started:
            active.start()

    def _reject(self, status: int, why: str) -> None:
        """Refuse the request being received: answer ``status`` in order, then
        close. Never parse past it (a framing error, a limit, a timeout)."""
        self._parse_error = True
        self._in_head = False
        self.deadline = _INF
        self.block_reading(self.BLOCK_PIPELINE)
        log.info("request refused", extra={"fields": {
            "client": self.client.decode(), "status": status, "error": why}})
        bad = Exchange(self, b"", False, False, False, False, False, None, None, responses.error(status, True))
        bad.req_done = True
        broken, self.current = self.current, None
        if broken is None or broken.req_done:
            self._enqueue(bad)  # the error lies between requests
        elif broken is self.active:
            # Part of it may have reached the upstream: that connection is void.
            if broken.response_started:
                self.abort()
                return
            was_started = broken.started
            broken.abandon()
            self.active = bad
            if was_started:
                bad.start()
        else:
            self.queue[self.queue.index(broken)] = bad
        active = self.active
        if active is not None and not active.started:
            active.start()  # a deadline fired outside data_received

    def _refuse(self, status: int, why: str):
        """``_reject`` from inside a parser callback: stops the parser too."""
        self._reject(status, why)
        raise _Refused(why)

    def write(self, data: bytes) -> None:
        if not self._closed:
            self.outbox.write(self.transport, data)

    def abort(self) -> None:
        """Close at once: a response is broken and must not look complete."""
        if not self._closed:
            self._closed = True
            self.transport.abort()

    def closing_after_response(self) -> bool:
        # After a refusal, the responses before it keep the connection open
        # until the refusal's own answer (queued behind them) closes it.
        return self.worker.draining or (self._parse_error and not self.queue)

    # --- parser callbacks ---------------------------------------------------------


    def _unusual(self, version: str, method: bytes, url: bytes, headers: list) -> bool:
        """The checks most requests skip; refuses the request or says if it is HTTP/1.0."""
        max_head = self._max_head
        if self._head_seen > max_head and len(url) + sum(len(n) + len(v) + 4 for n, v in headers) > max_head:
            self._refuse(431, "request head too large")
        if len(headers) > self._max_count:
            self._refuse(431, f"more than {self._max_count} request headers")
        if version != "1.1" and version != "1.0":
            self._refuse(400 if version == "0.9" else 505, f"HTTP/{version} request")
        if method == b"CONNECT":
            self._refuse(405, "CONNECT is not served")
        return version == "1.0"

    def on_url(self, url: bytes) -> None:
        # The first piece of a request's target starts its head's clock (no
        # on_message_begin callback: one Python call less per request; the
        # method before it is a few bytes, which the idle deadline covers).
        if not self.url:
            self._in_head = True
            self._head_seen = self._chunk_len  # an upper bound: this whole chunk
            self.request_started = now = self.pool.now
            self.deadline = now + self._header_timeout
            self._deadline_kind = _HEAD
        self.url += url  # reset in on_headers_complete
        if len(self.url) > self._max_line:
            self._refuse(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        worker = self.worker
        settings = worker.settings
        worker.requests += 1
        method = parser.get_method()
        url, headers = self.url, self.headers
        self.url, self.headers = b"", []  # the request state is reset here, once
        self._in_head = False
        version = parser.get_http_version()
        http10 = False
        # One test for the usual request; the unusual ones are looked at closely.
        if version != "1.1" or self._head_seen > self._max_head or len(headers) > self._max_count \
                or method == b"CONNECT":
            http10 = self._unusual(version, method, url, headers)
        keep_alive = parser.should_keep_alive() and not (worker.draining or self._parse_error)
        head_only = method == b"HEAD"
        host = xff = conn = length = expect = upgrade = None
        expect_continue = False
        chunked = False
        kept = []
        classes = hdr.request_class
        for name, value in headers:
            code = classes.get(name)
            if code is None:
                code = hdr.classify_request(name)
            if code == PASS:
                kept.append(b"%s: %s\r\n" % (name, value))
            elif code == HOST:
                if host is not None:
                    self._refuse(400, "more than one Host header")  # RFC 9112 3.2
                host = value
            elif code == XFF:
                xff = value if xff is None else xff + b", " + value
            elif code == TE:
                # llhttp checked that chunked comes last; a coding before it
                # (gzip, chunked), a repeat, or even trailing whitespace (which
                # some parsers read as another coding) could be read otherwise
                # upstream: only a plain "chunked" is served (Envoy: 501).
                if chunked or value.lower() != b"chunked":
                    self._refuse(501, "Transfer-Encoding other than chunked")
                chunked = True
            elif code == CONNECTION:
                conn = value
            elif code == LENGTH:
                length = value
            elif code == EXPECT:
                expect = value
            elif code == UPGRADE:
                upgrade = value
            elif code == UNDERSCORE:
                policy = settings.underscore_headers
                if policy == "allow":
                    kept.append(b"%s: %s\r\n" % (name, value))
                elif policy == "reject":
                    self._refuse(400, f"header name with an underscore: {name[:64]!r}")
        if conn is not None and conn.lower() not in _PLAIN_CONNECTION:
            drop = nominated(conn) - _PLAIN_CONNECTION
            if drop:
                kept = [h for h in kept if h.split(b":", 1)[0].lower() not in drop]
        if chunked and http10:
            self._refuse(400, "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 6.1
        has_body = chunked or (length is not None and length != b"0")
        if has_body:
            if length is not None and settings.max_body_bytes and int(length) > settings.max_body_bytes:
                self._refuse(413, "Content-Length over the body limit")
            self._body_seen = 0
            limit = settings.request_timeout
            self._request_deadline = self.request_started + limit if limit else _INF
            self.deadline = min(self.pool.now + settings.body_timeout, self._request_deadline)
            self._deadline_kind = _BODY
        else:
            self.deadline = _INF  # the upstream side keeps its own deadlines
        # What the gateway answers itself keeps the connection only if the
        # body that may follow will be read: a client that sent
        # "Expect: 100-continue" may never send it, so close after those.
        keep_local = keep_alive
        if expect is not None:
            if http10:
                pass  # RFC 9110 10.1.1: ignored in HTTP/1.0 (and not forwarded)
            elif expect.lower() != b"100-continue":
                self._refuse(417, "unknown expectation")
            elif has_body:
                # Answered here, as nginx and Envoy do: "100 Continue" goes out
                # when the exchange starts (so after the responses before it),
                # and only if the request is proxied; a local answer instead
                # closes the connection (the body may never come).
                expect_continue = True
                keep_local = False
        if host is None:
            if not http10:
                self._refuse(400, "no Host header")
            host = b""
        q = url.find(b"?")
        path, query = (url, b"") if q < 0 else (url[:q], url[q + 1:])
        if path[:1] != b"/":
            if path == b"*" and method == b"OPTIONS":
                path = b"*"
            else:
                try:
                    parsed = httptools.parse_url(url)
                except httptools.HttpParserInvalidURLError:
                    self._refuse(400, "invalid request target")
                if parsed.schema is None or parsed.host is None:
                    self._refuse(400, "invalid request target")
                if parsed.userinfo:
                    self._refuse(400, "userinfo in the request target")  # RFC 9110 4.2.4
                authority = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
                if host and _authority(host) != _authority(authority):
                    self._refuse(400, "Host disagrees with the absolute-form target")
                host = authority
                path, query = parsed.path or b"/", parsed.query or b""
                url = path + (b"?" + query if query else b"")
        # One spelling per resource before anything looks at the path; the
        # normal form is also what goes upstream (common/path.py). The last
        # path found normal is remembered: keep-alive clients repeat paths.
        if path != self._normal_last:
            if _normal_path(path) is not None:
                self._normal_last = path
            elif path != b"*":
                try:
                    norm, redirect = normalize_path(path, settings.escaped_slashes, settings.merge_slashes)
                except PathError as exc:
                    self._refuse(400, f"request path: {exc}")
                path = norm
                url = path + (b"?" + query if q >= 0 else b"")
                if redirect:  # escaped slashes: the client asks again with plain ones
                    location = path + (b"?" + query if query else b"")
                    return self._enqueue(Exchange(self, b"", keep_local, http10, head_only, False, False, None,
                                                  None, responses.redirect(307, location, not keep_local)))
        if self._overloaded:
            return self._local(503, False, http10, head_only)
        router = worker.router
        # Keep-alive clients repeat their Host: remember its virtual host for
        # this generation and skip the normalising and the lookup.
        if host == self._vh_host and router is not None and router.generation == self._vh_gen:
            vh = self._vh
        else:
            if (host or not http10) and _HOST.match(host) is None:  # HTTP/1.1 needs a Host
                self._refuse(400, "invalid Host header")
            hostkey = host.lower()
            if hostkey[-1:] != b"]":  # not a bare IPv6 literal: drop a port
                c = hostkey.rfind(b":")
                if c >= 0:
                    hostkey = hostkey[:c]
            vh = router.vhost(self.listener, hostkey) if router is not None else None
            # The generation, not the Router: holding the Router would keep
            # the old ring slot referenced after the worker unpinned it.
            self._vh_gen, self._vh_host, self._vh = router.generation if router else -1, host, vh
        cand = vh.match(method, path, headers, query) if vh is not None else None
        if cand is None:
            return self._local(404, keep_local, http10, head_only)
        action = cand.action
        host_out = cors_edit = None
        if action.filtered:
            # The fixed order: request header modifier, header template, CORS,
            # redirect, rewrite.
            edit = action.request_edit
            if edit is not None:
                kept = hdr.drop_lines(kept, edit.drop)
                if edit.lines:
                    kept.append(edit.lines)
                host_out = edit.host
            templates = action.templates
            if templates is not None:
                kept = hdr.drop_lines(kept, templates.drop)
                kept.append(templates.render(self.client, path, headers))
            cors = action.cors
            if cors is not None:
                origin = header_value(headers, b"origin")
                if origin:
                    if method == b"OPTIONS":
                        wanted = header_value(headers, b"access-control-request-method")
                        if wanted:  # a preflight: answered here, never forwarded
                            lines = cors.preflight(origin, wanted,
                                                   header_value(headers, b"access-control-request-headers"))
                            self._enqueue(Exchange(self, b"", keep_local, http10, head_only, False, False,
                                                   None, None, responses.preflight(lines, not keep_local)))
                            return
                    cors_edit = cors.response_edit(origin)
            if action.redirect is not None:
                return self._redirect(action.redirect, cand.prefix, host, path, query, keep_local, http10, head_only)
            rewrite = action.rewrite
            if rewrite is not None:
                if rewrite.hostname:
                    host_out = rewrite.hostname.encode()
                if rewrite.path_type:
                    new = rewrite.path.encode()
                    if rewrite.path_type == "ReplacePrefixMatch":
                        new = hdr.replace_prefix(path, cand.prefix, new)
                    url = new + b"?" + query if q >= 0 else new
        backend_edit = None
        if action.backend_edits is None:
            cluster = action.single or action.choose()
        else:
            i = action.choose_index()
            cluster = action.clusters[i] if i >= 0 else None
            if cluster is not None:
                backend_edit = action.backend_edits[i]
                edit = backend_edit[0]  # this backend's request header modifier, after the rule's
                if edit is not None:
                    kept = hdr.drop_lines(kept, edit.drop)
                    if edit.lines:
                        kept.append(edit.lines)
                    host_out = edit.host or host_out
        if cluster is None:
            return self._local(500, keep_local, http10, head_only)
        endpoints = cluster.endpoints
        endpoint = endpoints[0] if len(endpoints) == 1 else cluster.pick()
        if endpoint is None:
            return self._local(503, keep_local, http10, head_only)
        # The X-Forwarded-* lines depend only on the client, its Host and any
        # X-Forwarded-For it sent: made once per connection and Host.
        if xff is None and host == self._fwd_host:
            forwarded = self._fwd
        else:
            forwarded = b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n\r\n" % (
                xff + b", " + self.client if xff else self.client, self.scheme, host)
            if xff is None:
                self._fwd_host, self._fwd = host, forwarded
        head = b"".join((
            method, b" ", url, b" HTTP/1.1\r\nhost: ", host_out or cluster.host_rewrite or host, b"\r\n",
            *kept,
            b"content-length: " + length + b"\r\n" if length is not None and not chunked else b"",
            b"transfer-encoding: chunked\r\n" if chunked else b"",
            forwarded,
        ))
        # Positional for speed: (proto, head, keep_alive, http10, head_only,
        # chunked, replayable, cluster, endpoint, local, timeout)
        ex = Exchange(
            self, head, keep_alive, http10, head_only, chunked,
            not chunked and (length is None or length == b"0"),
            cluster, endpoint, None, action.timeout, action.backend_timeout,
        )
        if expect_continue:
            ex.expect_continue = True
        if upgrade is not None and upgrade.lower() == b"websocket" and not http10 and parser.should_upgrade():
            # A WebSocket handshake: the one upgrade passed on (h2c and others are not).
            ex.head = ex.head[:-2] + b"connection: upgrade\r\nupgrade: websocket\r\n\r\n"
            ex.upgrade = True
        if action.filtered:
            edits = backend_edit[1] if backend_edit is not None else action.response_edits
            ex.response_edits = (cors_edit,) + edits if cors_edit is not None else edits
            if action.retry is not None:
                ex.retry = action.retry
                ex.kept = []
            if action.mirrors:
                ex.mirrors = self._mirrors(action.mirrors, head, head_only)
        self._enqueue(ex)

    def _mirrors(self, mirrors, head: bytes, head_only: bool) -> tuple:
        """Start the copies of this request its RequestMirror filters ask for."""
        started = []
        for cluster, percent in mirrors:
            if percent >= 100.0 or random.random() * 100.0 < percent:
                started.append(Mirror(self.worker, cluster, head, head_only))
        return tuple(started)

    def _redirect(self, r, prefix: bytes, host: bytes, path: bytes, query: bytes,
                  keep_alive: bool, http10: bool, head_only: bool) -> None:
        """Answer a RequestRedirect filter: Location built as Gateway API says."""
        scheme = r.scheme.encode() if r.scheme else self.scheme
        if r.hostname:
            hostname = r.hostname.encode()
        else:
            hostname = host.lower()
            c = hostname.rfind(b":")
            if c >= 0 and hostname[-1:] != b"]":
                hostname = hostname[:c]
        # No port given: the new scheme's well-known one, else the listener's.
        port = r.port or ((443 if r.scheme == "https" else 80) if r.scheme else self.local_port)
        well_known = (scheme == b"http" and port == 80) or (scheme == b"https" and port == 443)
        authority = hostname if well_known else b"%s:%d" % (hostname, port)
        if r.path_type == "ReplaceFullPath":
            path = r.path.encode()
        elif r.path_type == "ReplacePrefixMatch":
            path = hdr.replace_prefix(path, prefix, r.path.encode())
        location = b"%s://%s%s%s" % (scheme, authority, path, b"?" + query if query else b"")
        local = responses.redirect(r.status, location, not keep_alive)
        self._enqueue(Exchange(self, b"", keep_alive, http10, head_only, False, False, None, None, local))

    def _local(self, status: int, keep_alive: bool, http10: bool, head_only: bool) -> None:
        local = responses.error(status, not keep_alive, head_only)
        self._enqueue(Exchange(self, b"", keep_alive, http10, head_only, False, False, None, None, local))

    def _enqueue(self, ex: Exchange) -> None:
        self.current = ex
        if self.active is None:
            self.active = ex
        else:
            self.queue.append(ex)
            if len(self.queue) >= self.worker.settings.max_pipeline:
                self.block_reading(self.BLOCK_PIPELINE)

    def on_body(self, body: bytes) -> None:
        settings = self.worker.settings
        self._body_seen += len(body)
        if settings.max_body_bytes and self._body_seen > settings.max_body_bytes:
            self._refuse(413, "request body over the limit")
        # Each chunk pushes the idle deadline on, never past the request's own.
        self.deadline = min(self.worker.pool.now + settings.body_timeout, self._request_deadline)
        ex = self.current
        if ex is not None:
            ex.body_chunk(body)

    def on_message_complete(self) -> None:
        self.deadline = _INF  # before request_finished: it may make the connection idle
        ex = self.current
        if ex is not None and not ex.req_done:
            ex.request_finished()

    # --- exchanges ----------------------------------------------------------------

    def exchange_done(self, ex: Exchange) -> None:
        """``ex`` was read to its end and answered: close, or start the next one."""
        if ex is not self.active or self._closed:
            return
        if not ex.keep_alive:
            self._closed = True
            self.outbox.close(self.transport)  # queued behind the response: it goes out first
            return
        if self.queue:
            self.active = nxt = self.queue.popleft()
            if len(self.queue) < self.worker.settings.max_pipeline and not self._parse_error:
                self.unblock_reading(self.BLOCK_PIPELINE)
            nxt.start()
        elif not self._in_head:  # else the next request's head deadline stands
            self.active = None
            self.deadline = self.pool.now + self._keepalive
            self._deadline_kind = _IDLE
        else:
            self.active = None

    def tunnel_open(self, conn) -> None:
        """The upstream answered 101: from now on bytes go both ways untouched."""
        self.tunnel = conn
        self.deadline = _INF
        if self._early:
            conn.write(self._early)
            self._early = b""
        self.unblock_reading(self.BLOCK_PIPELINE)

    def tunnel_closed(self) -> None:
        """The upstream side of the tunnel ended: close ours after what is queued."""
        self.tunnel = None
        if not self._closed:
            self._closed = True
            self.outbox.close(self.transport)

    # --- flow control -------------------------------------------------------------

    def block_reading(self, reason: int) -> None:
        if not self._blocked and not self._closed:
            self.transport.pause_reading()
        self._blocked |= reason

    def unblock_reading(self, reason: int) -> None:
        was = self._blocked
        self._blocked &= ~reason
        if was and not self._blocked and not self._closed:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        # The client reads slower than the upstream sends: stop reading upstream.
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.transport.pause_reading()

    def resume_writing(self) -> None:
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.transport.resume_reading()

    # --- worker housekeeping ---------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Called by the worker's sweep: act on a deadline that has passed."""
        ex = self.active
        if ex is not None and ex.waiting_since and not ex.response_started:
            limit = self.worker.settings.upstream_response_timeout
            if limit and now - ex.waiting_since > limit:
                ex.response_timed_out()
        if now < self.deadline or self._closed:
            return
        kind, self.deadline = self._deadline_kind, _INF
        if kind == _IDLE:
            self.close_if_idle()
        elif kind == _BODY:
            self._reject(408, "request body timed out")
        elif self._in_head:
            self._reject(408, "request head timed out")
        else:
            self.close_if_idle()  # a new connection that never sent a byte: nothing to answer

    def close_if_idle(self) -> bool:
        if self.active is None and not self._closed:
            self._closed = True
            self.outbox.close(self.transport)
            return True
        return False


def _authority(host: bytes) -> bytes:
    """A Host value compared as the origin server would: lower-case, no default port."""
    host = host.lower()
    return host[:-3] if host.endswith(b":80") else host
