"""The downstream HTTP/1.1 connection: the httptools parser's callback target.

State by lifetime:
* process    - ``worker`` (router, pool, settings), ``loop``, ``listener``
* connection - transport, parser, client address, the exchange being proxied
               (``active``), pipelined exchanges waiting (``queue``), what
               blocks reading (``_blocked``), ``idle_since``
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
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque

import httptools

from dataplane import responses
from dataplane.exchange import Exchange
from dataplane.mirror import Mirror
from dataplane import headers as hdr
from dataplane.headers import CONNECTION, HOST, LENGTH, PASS, TE, XFF, header_value, nominated

log = logging.getLogger("fluxgate.protocol")

MAX_PIPELINE = 16
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


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
        self.idle_since = time.monotonic()
        self._blocked = 0
        self._closed = False
        self._parse_error = False
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
        self.worker.connections.add(self)

    def connection_lost(self, exc) -> None:
        self._closed = True
        self.worker.connections.discard(self)
        if self.active is not None:
            self.active.abandon()
        for ex in self.queue:
            ex.abandon()
        self.queue.clear()
        self.active = self.current = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Tunnels (WebSocket) come later: answer this request, then close,
            # since the bytes after it are not HTTP.
            self._parse_error = True
            if self.current is not None:
                self.current.keep_alive = False
                if not self.current.req_done:
                    self.current.request_finished()
            self.block_reading(self.BLOCK_PIPELINE)
        except httptools.HttpParserError as exc:
            self._bad_request(exc)
        active = self.active
        if active is not None and not active.started:
            active.start()

    def _bad_request(self, exc: Exception) -> None:
        # Never parse past a framing error: answer 400 in order, then close.
        self._parse_error = True
        self.block_reading(self.BLOCK_PIPELINE)
        log.info("bad request", extra={"fields": {"client": self.client.decode(), "error": str(exc)}})
        bad = Exchange(self, b"", False, False, False, False, False, None, None, responses.error(400, True))
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

    def write(self, data: bytes) -> None:
        if not self._closed:
            self.outbox.write(self.transport, data)

    def abort(self) -> None:
        """Close at once: a response is broken and must not look complete."""
        if not self._closed:
            self._closed = True
            self.transport.abort()

    def closing_after_response(self) -> bool:
        return self.worker.draining or self._parse_error

    # --- parser callbacks ---------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        # Reset in on_headers_complete, so no on_message_begin callback is needed.
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        worker = self.worker
        worker.requests += 1
        method = parser.get_method()
        url, headers = self.url, self.headers
        self.url, self.headers = b"", []  # the request state is reset here, once
        http10 = parser.get_http_version() == "1.0"
        keep_alive = parser.should_keep_alive() and not (worker.draining or self._parse_error)
        head_only = method == b"HEAD"
        host = xff = conn = length = None
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
                    return self._local(400, keep_alive, http10, head_only)  # RFC 9112 3.2
                host = value
            elif code == XFF:
                xff = value if xff is None else xff + b", " + value
            elif code == TE:
                chunked = True
            elif code == CONNECTION:
                conn = value
            elif code == LENGTH:
                length = value
        if conn is not None and conn.lower() not in _PLAIN_CONNECTION:
            drop = nominated(conn) - _PLAIN_CONNECTION
            if drop:
                kept = [h for h in kept if h.split(b":", 1)[0].lower() not in drop]
        if host is None:
            if not http10:
                return self._local(400, keep_alive, http10, head_only)
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
                    return self._local(400, keep_alive, http10, head_only)
                path, query = parsed.path or b"/", parsed.query or b""
                url = path + (b"?" + query if query else b"")
        router = worker.router
        # Keep-alive clients repeat their Host: remember its virtual host for
        # this generation and skip the normalising and the lookup.
        if host == self._vh_host and router is not None and router.generation == self._vh_gen:
            vh = self._vh
        else:
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
            return self._local(404, keep_alive, http10, head_only)
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
                            self._enqueue(Exchange(self, b"", keep_alive, http10, head_only, False, False,
                                                   None, None, responses.preflight(lines, not keep_alive)))
                            return
                    cors_edit = cors.response_edit(origin)
            if action.redirect is not None:
                return self._redirect(action.redirect, cand.prefix, host, path, query, keep_alive, http10, head_only)
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
            return self._local(500, keep_alive, http10, head_only)
        endpoints = cluster.endpoints
        endpoint = endpoints[0] if len(endpoints) == 1 else cluster.pick()
        if endpoint is None:
            return self._local(503, keep_alive, http10, head_only)
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
            if len(self.queue) >= MAX_PIPELINE:
                self.block_reading(self.BLOCK_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self.current
        if ex is not None:
            ex.body_chunk(body)

    def on_message_complete(self) -> None:
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
            if len(self.queue) < MAX_PIPELINE and not self._parse_error:
                self.unblock_reading(self.BLOCK_PIPELINE)
            nxt.start()
        else:
            self.active = None
            self.idle_since = self.worker.pool.now  # coarse: the keep-alive sweep runs each second

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

    def is_idle(self) -> bool:
        return self.active is None

    def close_if_idle(self) -> bool:
        if self.active is None and not self._closed:
            self._closed = True
            self.outbox.close(self.transport)
            return True
        return False
