"""The downstream HTTP/1.1 connection: the httptools parser's callback target.

State by lifetime: process (``worker``, ``loop``, ``listener``); connection
(transport, parser, ``reader``, ``dispatcher``, ``flow``, the one
``deadline``, the exchange being proxied ``active`` and those pipelined
behind it ``queue``); request (``url`` and ``headers`` as the parser collects
them, reset in one place, where ``on_headers_complete`` hands them to the
head reader; ``current``, the exchange of the request being parsed).

Theory of operation: on headers complete the head reader makes a Request
(request.py), the dispatcher routes it, runs its filters and makes its
Exchange (dispatch.py): one that proxies, or one the gateway answers itself.
Exchanges start in request order: the first after ``feed_data`` returns (so a
small request's head and body reach the upstream in one write), the next when
the previous is finished. Every write goes through the worker's outbox.
Every refusal goes through ``_reject``: answered in order, then the
connection closes, since nothing after it can be trusted.

Deadlines (deadline.py, one timer per connection): the head is due within
``header_timeout`` of its first byte (of the connection's start for the
first request), and dribbling does not extend it; a body may pause
``body_timeout``, the whole request must arrive within ``request_timeout``;
an idle keep-alive connection closes after ``keepalive_timeout``. The active
exchange's own timeouts share the timer.
"""

from __future__ import annotations

import logging
from time import perf_counter
import httptools

from dataplane import flow, responses
from dataplane.deadline import CLIENT, INF
from dataplane.dispatch import Dispatcher, local
from dataplane.downstream import BODY, HEAD, IDLE, NOTHING, Downstream
from dataplane.exchange import QUEUED, answered
from dataplane.flow import FlowControl
from dataplane.request import HeadReader, Refused

log = logging.getLogger("fluxgate.protocol")
_H2_PREFACE_ERROR = "Pause on PRI"  # llhttp's HPE_PAUSED_H2_UPGRADE, at "PRI * HTTP/2.0"


class _Stop(Exception):
    """Raised from a parser callback after ``_reject``: stop parsing this stream."""


class HttpProtocol(Downstream):
    def __init__(self, worker, listener: str) -> None:
        super().__init__(worker)  # process and the exchanges' side (downstream.py)
        self.listener = listener
        self.scheme = b"http"
        # connection
        self.parser = httptools.HttpRequestParser(self)
        self.reader = None  # HeadReader, made when the peer is known
        self.dispatcher = None  # Dispatcher, with it
        self._overloaded = False  # over the worker's connection limit: answer 503 and close
        self._first = True  # the first request: its head's clock started at the connection's
        self._between = True  # between requests: the next byte starts a head
        self._head_seen = 0  # bytes received while in the head (an upper bound)
        self._chunk_len = 0  # the size of the data being parsed
        self._body_seen = 0  # bytes of the current request body
        self._request_deadline = INF  # the whole request must have arrived by then
        self._completed = 0  # requests read to their end
        # The last read that was exactly one whole request without a body, its
        # Request and the table generation it was routed in (see _repeat).
        self._seen, self._seen_req, self._seen_gen, self._candidate = None, None, -1, None
        # request
        self.url = b""
        self.headers = []

    # --- connection -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.reader = HeadReader(self.limits, peer[0].encode() if peer else b"", self.scheme,
                                 local[1] if local else 0, self.worker.tracer)
        self.dispatcher = Dispatcher(self.worker, self.reader)
        self.flow = FlowControl(transport)
        worker = self.worker
        worker.connections.add(self)
        self.meter.opened()
        if len(worker.connections) > self.limits.max_connections_per_worker:
            self._overloaded = True
        self.request_started = self.loop.time()
        # The first request's head is due within header_timeout of the connection's start.
        self.wait_for(HEAD, self.request_started + self.limits.header_timeout)

    def connection_lost(self, exc) -> None:
        self.worker.connections.discard(self)
        self.meter.closed()
        self.abandon_all()
        # The parser holds this protocol (its callbacks): a cycle that only the
        # worker's rare full collections would free, keeping with it the
        # virtual host this connection last used - a whole table generation
        # per connection after a swap. Broken here, the connection is freed
        # by reference counting as soon as it is closed.
        self.parser = None
        if self.dispatcher is not None:
            self.dispatcher.forget()

    def eof_received(self) -> None:
        return None  # the transport closes; connection_lost follows

    def data_received(self, data: bytes) -> None:
        self.meter.received(len(data))
        if self._refused:
            # Past an upgrade, bytes are the tunnel's; past a refusal, nothing is parsed.
            if self.tunnel is not None:
                self.tunnel.write(data)
            return
        if data == self._seen and self._between and self.active is None and self._repeat():
            return
        self._chunk_len = n = len(data)
        whole = self._between  # this read starts at a request's first byte
        completed = self._completed
        self._candidate = None
        if whole:
            self._start_head()  # counts this chunk
        elif self._in_head:
            self._head_seen += n
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The bytes after this request are not HTTP. A WebSocket handshake
            # becomes a tunnel if the upstream answers 101 (until then they
            # wait here); any other upgrade is answered, then the connection
            # closes.
            self._refused = True
            self._in_head = False
            ex = self.current
            if ex is not None:
                ex.keep_alive = False
                if ex.upgrade:
                    self._early = data[exc.args[0]:] if exc.args else b""
                if not ex.req_done:
                    ex.request_finished()
            self.flow.block(flow.PIPELINE)
        except httptools.HttpParserError as exc:
            if not self._refused:  # else a callback refused the request already
                if str(exc).startswith(_H2_PREFACE_ERROR):
                    self._reject(505, "HTTP/2 is not enabled on this listener", responses.H2_NOT_ENABLED)
                else:
                    self._reject(400, str(exc))
        else:
            if self._in_head and self._head_seen > self.limits.max_header_bytes:
                self._reject(431, "request head too large")  # still no end of it, and too much
            elif whole and self._candidate is not None and self._completed == completed + 1 and self._between:
                self._seen, self._seen_req, self._seen_gen = data, self._candidate, self.worker.router.generation
        active = self.active
        if active is not None and active.state == QUEUED:
            active.start()

    def _start_head(self) -> None:
        """A request's first byte: its head's clock starts (the first one's at connect)."""
        self._between = False
        self._in_head = True
        self._head_seen = self._chunk_len  # an upper bound: this whole chunk
        self.request_t0 = perf_counter()
        if self._first:
            self._first = False
        else:
            self.request_started = now = self.loop.time()
            self.wait_for(HEAD, now + self.limits.header_timeout)

    def _reject(self, status: int, why: str, answer: bytes | None = None) -> None:
        """Refuse the request being received: answer ``status`` in order, then
        close. Never parse past it."""
        self._refused = True
        self._in_head = False
        self.wait_for(NOTHING, 0.0)
        self.flow.block(flow.PIPELINE)
        log.info("request refused", extra={"fields": {
            "client": self.reader.client.decode(), "status": status, "error": why}})
        bad = answered(self, answer or responses.error(status, True), False)
        bad.req_done = True
        broken, self.current = self.current, None
        if broken is None or broken.req_done:
            self.enqueue(bad)  # the error lies between requests
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

    # --- parser callbacks ---------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if self._between:
            self._start_head()  # a pipelined request, in the same bytes as the one before
        self.url += url
        if len(self.url) > self.limits.max_request_line_bytes:
            self._reject(414, "request line too long")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        worker = self.worker
        worker.requests += 1
        url, headers = self.url, self.headers
        self.url, self.headers = b"", []  # the request state is reset here, once
        self._in_head = False
        try:
            req = self.reader.read(self.parser, url, headers, self._head_seen, worker.closing or self._refused)
            if req.has_body:
                self._body_seen = 0
                limit = self.limits.request_timeout
                self._request_deadline = self.request_started + limit if limit else INF
                self.wait_for(BODY, min(self.loop.time() + self.limits.body_timeout, self._request_deadline))
            else:
                self.wait_for(NOTHING, 0.0)  # the exchange keeps its own deadlines
            if req.answer is not None:
                return self.enqueue(answered(self, req.answer, req.keep_local, req.http10, req.head_only, req))
            if self._overloaded:
                return self.enqueue(local(self, req, 503, False))
            ex = self.dispatcher.exchange(self, req)
            self.enqueue(ex)
            if self.dispatcher.plain and not (req.has_body or req.upgrade or req.answer is not None or self._refused):
                self._candidate = req  # may serve a repeat of these bytes (data_received)
        except Refused as exc:
            self._reject(exc.status, exc.reason)
            raise _Stop from None

    def on_body(self, body: bytes) -> None:
        self._body_seen += len(body)
        if self.limits.max_body_bytes and self._body_seen > self.limits.max_body_bytes:
            self._reject(413, "request body over the limit")
            raise _Stop
        # Each chunk pushes the idle deadline on, never past the request's own.
        self.wait_for(BODY, min(self.loop.time() + self.limits.body_timeout, self._request_deadline))
        ex = self.current
        if ex is not None:
            ex.body_chunk(body)

    def _repeat(self) -> bool:
        """Serve a read that is byte for byte the last one-request read: the
        parser, between requests as then, would yield the same head, and the
        head reader the same Request (it depends on nothing else of the
        connection's), so that Request is dispatched again unparsed. Only for a
        request the route did not filter (the Request is shared), in the same
        table generation; False: parse it as usual."""
        worker = self.worker
        router = worker.router
        if router is None or router.generation != self._seen_gen or worker.closing or self._overloaded:
            self._seen = None
            return False
        worker.requests += 1
        self._completed += 1
        self.request_t0 = perf_counter()
        self.wait_for(NOTHING, 0.0)
        ex = self.dispatcher.exchange(self, self.reader.repeat(self._seen_req))
        if not self.dispatcher.plain:
            self._seen = None  # the route changed: its filters may edit the Request
        self.enqueue(ex)
        ex.request_finished()
        ex.start()
        return True

    def on_message_complete(self) -> None:
        self._completed += 1
        if self._waiting == BODY:  # before request_finished: it may make the connection idle
            self.wait_for(NOTHING, 0.0)
        self._between = True
        ex = self.current
        if ex is not None and not ex.req_done:
            ex.request_finished()

    def deadline_passed(self, kind: int) -> None:
        """The connection's Deadline: one of its kinds is due."""
        if self._closed:
            return
        if kind != CLIENT:  # the exchange's own: route, attempt, response, retry
            return super().deadline_passed(kind)
        waiting, self._waiting = self._waiting, NOTHING
        if waiting == HEAD:
            if self._in_head:
                self._reject(408, "request head timed out")
            else:
                self.close_if_idle()  # a new connection that never sent a byte: nothing to answer
        elif waiting == BODY:
            self._reject(408, "request body timed out")
        elif waiting == IDLE:
            self.close_if_idle()
