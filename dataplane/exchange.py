"""One request's journey: choose an endpoint, send, relay the response, finish.

An Exchange is created by the downstream protocol when a request's headers
are complete, and is *done* when both its request has been read to the end
and its response has been written (``_maybe_done``); only then may the
downstream connection start the next pipelined request. That ordering is what
keeps responses in request order and framing intact.

Failure rules (what the client sees):
* no endpoint in the cluster                        → 503
* connect refused / timed out                       → next endpoint, then 502
* upstream closed before a response, request without body
                                                    → retried on a fresh
                                                      connection, then 502
* upstream invalid or closed mid-response           → client connection closed
                                                      (a truncated response must
                                                      never look complete)
* route timeout (timeouts.request, from the request's arrival) or backend
  timeout (timeouts.backendRequest, per attempt, from when the request is
  handed to an upstream connection) before the response  → 504; after the
  response started                                    → client connection closed

Retry policy (``retry``, a router.RetryPlan; HTTPRoute retry, FluxGateRoute
retries): before any byte of a response has gone downstream, a failed
attempt is tried again on another endpoint (after ``backoff``), at most
``attempts`` times, when the policy names the failure: a listed status from
the upstream (the response is discarded and its connection closed), a
connect failure or a reset (the 502 we would answer, or the policy's flag),
a per-try timeout (504). A retried request is sent again from ``kept``: its
head and body as framed for the upstream. A body longer than
RETRY_BODY_LIMIT is not kept, and such a request is not retried. When the
retries are used up the last answer stands: the upstream's response, or our
502/504.
"""

from __future__ import annotations

import asyncio
import logging

from dataplane import responses
from dataplane.upstream.connection import UpstreamConnection

log = logging.getLogger("fluxgate.exchange")

MAX_ATTEMPTS = 3
BODY_BUFFER_LIMIT = 64 * 1024  # buffered before an upstream is attached; then pause reading
RETRY_BODY_LIMIT = 64 * 1024  # a body kept for retries; longer ones are not retried


class Exchange:
    __slots__ = (
        "proto", "head", "keep_alive", "http10", "head_only", "chunked", "replayable",
        "cluster", "endpoint", "attempts", "local", "body", "body_bytes", "conn",
        "started", "req_done", "resp_done", "response_started", "timer", "timeout", "dead",
        "response_edits", "mirrors", "backend_timeout", "attempt_timer",
        "retry", "retries", "kept", "kept_bytes", "waiting_since", "upgrade", "tunnel",
        "expect_continue",
    )

    def __init__(self, proto, head: bytes, keep_alive: bool, http10: bool, head_only: bool,
                 chunked: bool, replayable: bool, cluster=None, endpoint=None,
                 local: bytes | None = None, timeout: float = 0.0, backend_timeout: float = 0.0) -> None:
        self.proto = proto
        self.head = head  # request line + headers for the upstream
        self.keep_alive = keep_alive
        self.http10 = http10
        self.head_only = head_only
        self.chunked = chunked  # re-frame the request body as chunked upstream
        self.replayable = replayable  # no body: safe to send again on a fresh connection
        self.cluster = cluster
        self.endpoint = endpoint
        self.attempts = 0
        self.local = local  # a response the gateway makes itself, or None
        self.body: list[bytes] | None = None  # framed body chunks not yet sent (made when needed)
        self.body_bytes = 0
        self.conn = None
        self.started = False
        self.req_done = False
        self.resp_done = False
        self.response_started = False
        self.timer = None
        self.timeout = timeout  # the whole request (timeouts.request)
        self.attempt_timer = None
        self.backend_timeout = backend_timeout  # one attempt (timeouts.backendRequest)
        self.dead = False  # the downstream connection is gone
        self.response_edits = ()  # ResponseHeaderModifiers (router.HeaderEdit), in order
        self.mirrors = ()  # Mirror copies of this request (RequestMirror), if any
        self.retry = None  # router.RetryPlan, when the route retries
        self.retries = 0  # retries made under ``retry``
        self.kept: list[bytes] | None = None  # the framed body so far, for a retry ([] once retry is set)
        self.kept_bytes = 0
        self.waiting_since = 0.0  # when the upstream had all it needs to answer (0: not yet)
        self.upgrade = False  # a WebSocket handshake: a 101 opens a tunnel
        self.tunnel = False  # the tunnel is open
        self.expect_continue = False  # the client waits for our "100 Continue" before its body

    # --- starting ---------------------------------------------------------------

    def start(self) -> None:
        self.started = True
        if self.local is not None:
            self.proto.write(self.local)
            self.response_started = True
            self._response_finished()
            return
        if self.timeout > 0:
            self.timer = self.proto.loop.call_later(self.timeout, self._timed_out)
        if self.expect_continue and not self.req_done:
            self.proto.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn = self.proto.worker.pool.acquire(self.endpoint)
        if conn is not None:
            self._attach(conn)
        else:
            self._open()

    def _open(self) -> None:
        """Send on a new connection to ``self.endpoint`` (the pool is not asked)."""
        self.proto.loop.create_task(self._connect(self.endpoint))

    async def _connect(self, key: tuple[str, int]) -> None:
        worker = self.proto.worker
        try:
            _, conn = await asyncio.wait_for(
                self.proto.loop.create_connection(
                    lambda: UpstreamConnection(worker.pool, key, worker.outbox), key[0], key[1]
                ),
                worker.settings.upstream_connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            if self.dead or self.resp_done:
                return
            self.attempts += 1
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else exc.strerror or str(exc)
            log.warning("upstream connect failed", extra={"fields": {
                "upstream": f"{key[0]}:{key[1]}", "cluster": self.cluster.name, "error": reason}})
            if self.attempts < MAX_ATTEMPTS:
                nxt = self.cluster.pick(skip=self.endpoint)
                if nxt is not None:
                    self.endpoint = nxt
                    self._open()
                    return
            r = self.retry
            if r is not None and (r.connect_failure or 502 in r.codes) and self.may_retry():
                self._retry("connect failure")
                return
            self._fail(502)
            return
        worker.pool.opened += 1
        if self.dead or self.resp_done:
            worker.pool.release(conn)
            return
        self._attach(conn)

    def _attach(self, conn) -> None:
        self.conn = conn
        body = self.body
        if body:
            data = self.head + b"".join(body)
            body.clear()
            if self.body_bytes > BODY_BUFFER_LIMIT:
                self.proto.unblock_reading(self.proto.BLOCK_BODY)
            self.body_bytes = 0
        else:
            data = self.head
        conn.attach(self, data)
        self.waiting_since = self.proto.worker.pool.now
        if self.backend_timeout > 0:  # a new attempt: its own deadline
            if self.attempt_timer is not None:
                self.attempt_timer.cancel()
            self.attempt_timer = self.proto.loop.call_later(self.backend_timeout, self._attempt_timed_out)

    # --- request body (from the downstream parser) --------------------------------

    def body_chunk(self, chunk: bytes) -> None:
        if self.chunked:
            chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        for mirror in self.mirrors:
            mirror.body_chunk(chunk)
        kept = self.kept
        if kept is not None:
            kept.append(chunk)
            self.kept_bytes += len(chunk)
            if self.kept_bytes > RETRY_BODY_LIMIT:
                self.kept = None  # too long to send again: no retries for this one
        if self.resp_done:
            return  # the response is over; the rest of the body is read and dropped
        if self.conn is not None:
            self.conn.write(chunk)
        else:
            if self.body is None:
                self.body = [chunk]
            else:
                self.body.append(chunk)
            self.body_bytes += len(chunk)
            if self.body_bytes > BODY_BUFFER_LIMIT:
                self.proto.block_reading(self.proto.BLOCK_BODY)

    def request_finished(self) -> None:
        self.req_done = True
        if self.conn is not None:
            self.waiting_since = self.proto.worker.pool.now  # the response is due from now
        if self.chunked and (self.mirrors or not self.resp_done):
            self.body_chunk(b"")  # frames as "0\r\n\r\n": the last chunk
        for mirror in self.mirrors:
            mirror.request_finished()
        if self.resp_done:
            self.proto.exchange_done(self)

    # --- response (from the upstream connection) -----------------------------------

    def connection_header(self) -> bytes:
        """The downstream Connection header and the head's last CRLF."""
        if self.keep_alive and not self.proto.closing_after_response():
            return b"connection: keep-alive\r\n\r\n" if self.http10 else b"\r\n"
        self.keep_alive = False
        return b"connection: close\r\n\r\n"

    def downstream_write(self, data: bytes) -> None:
        if not self.dead:
            self.proto.write(data)

    def response_done(self, conn, reusable: bool) -> None:
        self.conn = None
        if reusable and self.req_done and not self.upgrade:
            self.proto.worker.pool.release(conn)
        else:
            conn.close()
        self._response_finished()

    def _response_finished(self) -> None:
        self.resp_done = True
        if self.timer is not None or self.attempt_timer is not None:
            self._cancel_timers()
        # Done only when the request was read to its end too; if the response
        # came first (a 404, an early 413), the rest of the body is read and
        # dropped, then request_finished() completes the exchange.
        if self.req_done:
            self.proto.exchange_done(self)

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.proto.block_reading(self.proto.BLOCK_UPSTREAM)
        else:
            self.proto.unblock_reading(self.proto.BLOCK_UPSTREAM)

    # --- failures ---------------------------------------------------------------

    def upstream_failed(self, conn, reason: str) -> None:
        """The upstream connection died or sent garbage before the response ended."""
        self.conn = None
        conn.close()
        if self.dead or self.resp_done:
            return
        if self.response_started:
            log.warning("upstream failed mid-response", extra={"fields": {
                "cluster": self.cluster.name, "error": reason}})
            self.resp_done = True
            self.proto.abort()
            return
        self.attempts += 1
        # A pooled connection may have been closed by the upstream just as we
        # sent on it: replay a body-less request once more on a fresh one.
        if self.replayable and self.attempts < MAX_ATTEMPTS and conn.uses > 1:
            self._open()
            return
        r = self.retry
        if r is not None and (r.reset or 502 in r.codes) and self.may_retry():
            self._retry(reason)
            return
        log.warning("upstream failed", extra={"fields": {
            "cluster": self.cluster.name, "upstream": f"{conn.key[0]}:{conn.key[1]}", "error": reason}})
        self._fail(502)

    # --- retries ----------------------------------------------------------------

    def may_retry(self) -> bool:
        """The policy has a retry left and the request can be sent again whole."""
        r = self.retry
        return (r is not None and self.retries < r.attempts and self.kept is not None
                and not (self.dead or self.resp_done or self.response_started))

    def retry_status(self, conn, status: int) -> None:
        """The upstream answered a status the policy retries (``conn`` is closed)."""
        self.conn = None
        self._retry(f"status {status}")

    def _retry(self, why: str) -> None:
        self.retries += 1
        if self.attempt_timer is not None:
            self.attempt_timer.cancel()
            self.attempt_timer = None
        log.info("retrying upstream request", extra={"fields": {
            "cluster": self.cluster.name, "upstream": f"{self.endpoint[0]}:{self.endpoint[1]}",
            "why": why, "retry": self.retries}})
        # Everything framed so far goes again; what arrives later follows it.
        self.body = list(self.kept)
        self.body_bytes = self.kept_bytes
        if self.retry.backoff > 0:
            self.proto.loop.call_later(self.retry.backoff, self._retry_now)
        else:
            self._retry_now()

    def _retry_now(self) -> None:
        if self.dead or self.resp_done:
            return
        nxt = self.cluster.pick(skip=self.endpoint)
        if nxt is None:  # the endpoints went away meanwhile
            self._fail(503)
            return
        self.endpoint = nxt
        conn = self.proto.worker.pool.acquire(nxt)
        if conn is not None:
            self._attach(conn)
        else:
            self._open()

    def _cancel_timers(self) -> None:
        for timer in (self.timer, self.attempt_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.attempt_timer = None

    def response_timed_out(self) -> None:
        """FLUXGATE_UPSTREAM_RESPONSE_TIMEOUT passed without a response head."""
        self.waiting_since = 0.0
        self._attempt_timed_out()

    def _attempt_timed_out(self) -> None:
        """timeouts.backendRequest: this attempt took too long."""
        self.attempt_timer = None
        r = self.retry
        if r is not None and 504 in r.codes and self.may_retry():
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.abort()
            self._retry("per-try timeout")
            return
        self._timed_out()

    def _timed_out(self) -> None:
        self._cancel_timers()
        if self.resp_done or self.dead:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if self.response_started:
            self.resp_done = True
            self.proto.abort()
        else:
            self._fail(504)

    def _fail(self, status: int) -> None:
        close = not self.keep_alive or self.proto.closing_after_response()
        self.keep_alive = not close
        self.proto.write(responses.error(status, close, self.head_only))
        self.response_started = True
        self._response_finished()

    def abandon(self) -> None:
        """The downstream connection is gone: release everything at once."""
        self.dead = True
        self._cancel_timers()
        conn, self.conn = self.conn, None
        if conn is not None:
            if self.tunnel:
                conn.close()  # the client's last bytes (a close frame) still go out
            else:
                conn.abort()

    # --- tunnels (WebSocket) ----------------------------------------------------

    def tunnel_open(self, conn) -> None:
        """The upstream switched protocols (101, already relayed)."""
        self.tunnel = True
        self._cancel_timers()  # request timeouts end with the handshake
        self.waiting_since = 0.0
        self.proto.tunnel_open(conn)

    def tunnel_closed(self) -> None:
        self.conn = None
        self.resp_done = True
        if not self.dead:
            self.proto.tunnel_closed()
