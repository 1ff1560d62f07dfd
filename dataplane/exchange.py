"""One request's journey: choose an endpoint, send, relay the response, finish.

An Exchange is made by the downstream protocol when a request's head is
complete: one that proxies (``proxied``) or one the gateway answers itself
(``answered``: 404, a redirect, a preflight, a refusal). It is *finished*
when its state is DONE and its request was read to the end (``req_done``):
only then may the connection start the next pipelined exchange. That keeps
responses in request order and framing intact.

States (the response side; ``req_done`` is the request side, which only
goes from False to True, at the request's last byte):

  QUEUED      made; waits for the exchanges before it on its connection
  CONNECTING  started; an upstream connection is being opened
  SENT        on an upstream connection: the request goes out, the response
              head is awaited
  BACKOFF     a retry waits for its back-off
  RESPONDING  the response head went downstream; its body streams
  TUNNEL      a 101 was relayed: bytes go both ways untouched (WebSocket)
  DONE        the response is complete (or was answered by the gateway)
  ABANDONED   the client is gone, or its connection was cut because a
              response broke off: nothing more is written for it

Transitions (anything else is a bug and raises ExchangeStateError):

  QUEUED      → CONNECTING | SENT | DONE | ABANDONED
  CONNECTING  → CONNECTING (next endpoint) | SENT | BACKOFF | DONE | ABANDONED
  SENT        → RESPONDING | CONNECTING | SENT (a retry) | BACKOFF | DONE | ABANDONED
  BACKOFF     → CONNECTING | SENT | DONE | ABANDONED
  RESPONDING  → TUNNEL | DONE | ABANDONED
  TUNNEL      → DONE | ABANDONED
  DONE        → ABANDONED (the client left while its body was still coming)
  ABANDONED   → (none)

``_move`` is the one place the state changes.

Failure rules (what the client sees):
* no endpoint in the cluster                        → 503
* connect refused / timed out                       → next endpoint, then 502
* upstream closed before a response, request without body
                                                    → retried on a fresh
                                                      connection, then 502
* upstream invalid or closed mid-response           → client connection closed
                                                      (a truncated response must
                                                      never look complete)
* route timeout (timeouts.request, from the exchange's start) or backend
  timeout (timeouts.backendRequest, per attempt, from when the request is
  handed to an upstream connection), or FLUXGATE_UPSTREAM_RESPONSE_TIMEOUT
  (from when the upstream has the whole request) before the response head
  → 504; after the response started → client connection closed

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

Timeouts are due times on the connection's one Deadline (dataplane/deadline.py):
ROUTE, ATTEMPT, RESPONSE and RETRY are set here and cleared when the
response is finished; the protocol hands them back through ``deadline_passed``.

What the upstream side (dataplane/upstream/connection.py) uses of an
exchange, and a Mirror (dataplane/upstream/mirror.py) provides as well:
read-only ``head_only``, ``http10``, ``upgrade``, ``expect_continue``,
``retry``; and ``relay``, ``may_retry``, ``retry_status``, ``response_head``,
``switching_protocols``, ``connection_header``, ``end_by_close``, ``upstream_paused``,
``upstream_failed``, ``response_done``, ``tunnel_open``, ``tunnel_closed``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from time import perf_counter

from dataplane import flow, requestid, responses
from dataplane.deadline import ATTEMPT, RESPONSE, RETRY, ROUTE
from dataplane.filters.chain import respond
from dataplane.upstream.connection import UpstreamConnection
from dataplane.upstream.mirror import Mirror

log = logging.getLogger("fluxgate.exchange")

MAX_ATTEMPTS = 3
BODY_BUFFER_LIMIT = 64 * 1024  # buffered before an upstream is attached; then pause reading
RETRY_BODY_LIMIT = 64 * 1024  # a body kept for retries; longer ones are not retried


class State(enum.IntEnum):
    QUEUED = 0
    CONNECTING = 1
    SENT = 2
    BACKOFF = 3
    RESPONDING = 4
    TUNNEL = 5
    DONE = 6
    ABANDONED = 7


# Plain ints where the exchange keeps and compares its state (``==``, never
# ``is``): compiled (Cython) an Exchange stores it as a C int.
QUEUED, CONNECTING, SENT, BACKOFF, RESPONDING, TUNNEL, DONE, ABANDONED = (int(s) for s in State)
TRANSITIONS: dict[int, frozenset[int]] = {
    QUEUED: frozenset({CONNECTING, SENT, DONE, ABANDONED}),
    CONNECTING: frozenset({CONNECTING, SENT, BACKOFF, DONE, ABANDONED}),
    SENT: frozenset({RESPONDING, CONNECTING, SENT, BACKOFF, DONE, ABANDONED}),
    BACKOFF: frozenset({CONNECTING, SENT, DONE, ABANDONED}),
    RESPONDING: frozenset({TUNNEL, DONE, ABANDONED}),
    TUNNEL: frozenset({DONE, ABANDONED}),
    DONE: frozenset({ABANDONED}),
    ABANDONED: frozenset(),
}
# The table as bit masks indexed by state: one shift and one test per move.
_ALLOWED = tuple(sum(1 << s for s in TRANSITIONS[state]) for state in range(len(State)))
_OVER = 1 << DONE | 1 << ABANDONED  # no more response
_STARTED = 1 << RESPONDING | 1 << TUNNEL | 1 << DONE  # bytes of a response went downstream
_RETRYABLE = 1 << CONNECTING | 1 << SENT | 1 << BACKOFF  # nothing relayed yet


class ExchangeStateError(RuntimeError):
    """A transition the table does not allow: a bug, never a client's doing."""


class Exchange:
    __slots__ = (
        "proto", "req", "state", "req_done", "keep_alive", "http10", "head_only", "local",
        "head", "cluster", "endpoint", "action", "responses", "retry", "chunked", "replayable",
        "upgrade", "expect_continue", "attempts", "retries", "conn", "body", "body_bytes",
        "kept", "kept_bytes", "mirrors", "t0", "sent_at", "status", "req_bytes", "resp_bytes",
        "source", "gateway", "rid", "upstream_s",
    )

    def __init__(self, proto, req, keep_alive: bool, http10: bool, head_only: bool, local: bytes | None,
                 head: bytes = b"", cluster=None, endpoint=None, action=None, responses: tuple = ()) -> None:
        self.proto = proto
        self.req = req  # the Request (None for a refusal made before one existed)
        self.state = QUEUED
        self.req_done = False
        self.keep_alive = keep_alive
        self.http10 = http10
        self.head_only = head_only
        self.local = local  # a response the gateway makes itself, or None
        self.head = head  # request line + headers for the upstream
        self.cluster = cluster
        self.endpoint = endpoint
        self.action = action  # the router's CompiledAction: timeouts, retry plan
        self.responses = responses  # response filters (the rule's, then its backend's)
        self.conn = None
        self.attempts = self.retries = 0
        self.body = None  # framed body chunks not yet sent (made when needed)
        self.body_bytes = 0
        self.kept_bytes = 0
        self.mirrors = ()  # Mirror copies of this request (RequestMirror)
        # For the meter (dataplane/metrics.py) and the access log, when the exchange ends:
        self.t0 = proto.request_t0  # the request head's first byte (perf_counter)
        self.sent_at = 0.0  # the current attempt went to its upstream
        self.upstream_s = 0.0  # the last attempt that got a whole response took
        self.status = 0  # of the response the client gets (0: none yet)
        self.req_bytes = self.resp_bytes = 0  # request body received, response bytes sent
        self.source = ""  # the route entry's "kind/namespace/name#rule" ("" when none matched)
        self.gateway = ""  # the Gateway of the listener (from the table)
        self.rid = req.request_id if req is not None else None  # x-request-id, both ways
        if local is None:
            self.chunked = req.chunked  # re-frame the request body as chunked upstream
            self.replayable = not req.has_body  # safe to send again on a fresh connection
            self.upgrade = req.upgrade  # a WebSocket handshake: a 101 opens a tunnel
            self.expect_continue = req.expect_continue
            self.retry = retry = action.retry
            self.kept = [] if retry is not None else None  # the framed body so far, for a retry
        else:
            self.chunked = self.replayable = self.upgrade = self.expect_continue = False
            self.retry = self.kept = None
            self.status = _status_of(local)

    # --- the one place the state changes ----------------------------------------

    def _move(self, new: int) -> None:
        if not _ALLOWED[self.state] >> new & 1:
            raise ExchangeStateError(f"exchange cannot go from {State(self.state).name} to {State(new).name}")
        if _OVER >> new & 1 and not _OVER >> self.state & 1:
            self._ended()  # once per exchange: the first move to DONE or ABANDONED
        self.state = new

    def _ended(self) -> None:
        """Counted (the meter) as the client got it: a client gone before any
        response counts as 499 (nginx's "client closed request"). Logged (the
        access log) and, when sampled, its span recorded (the tracer)."""
        proto = self.proto
        status = self.status if self.status else 499
        req = self.req
        seconds = perf_counter() - self.t0
        proto.meter.request(self.gateway, self.source, req.method if req is not None else b"",
                            status, seconds, self.req_bytes, self.resp_bytes)
        if proto.access_log is not None:
            proto.access_log.record(self, status, seconds)
        if req is not None and req.sampled:  # tracing on and this one sampled (dataplane/tracing.py)
            proto.worker.tracer.finish(self, seconds)

    @property
    def started(self) -> bool:
        return self.state != QUEUED

    @property
    def response_started(self) -> bool:
        """Some of a response went downstream (the exchange can no longer be answered anew)."""
        return bool(_STARTED >> self.state & 1)

    @property
    def over(self) -> bool:
        """No more of a response will be written (DONE or ABANDONED)."""
        return bool(_OVER >> self.state & 1)

    # --- starting ---------------------------------------------------------------

    def start(self) -> None:
        if self.local is not None:
            if self.rid is None:  # a refusal made before a Request existed
                self.rid = requestid.new()
            data = _with_id(self.local, self.rid)
            self.resp_bytes = len(data)
            self.proto.write(data)
            self._move(DONE)
            self._response_finished()
            return
        proto = self.proto
        if self.action.timeout > 0:
            proto.deadline.after(ROUTE, self.action.timeout)
        if self.expect_continue and not self.req_done:
            proto.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn = proto.pool.acquire(self.endpoint)
        if conn is not None:
            self._attach(conn)
        else:
            self._open()

    def _open(self) -> None:
        """Send on a new connection to ``self.endpoint`` (the pool is not asked)."""
        self._move(CONNECTING)
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
            if self.state != CONNECTING:
                return  # given up meanwhile (a timeout, the client gone)
            self.attempts += 1
            timed_out = isinstance(exc, asyncio.TimeoutError)
            self.proto.meter.upstream_error(self.source, self.cluster.name, "timeout" if timed_out else "refused")
            reason = "timed out" if timed_out else exc.strerror or str(exc)
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
        if self.state != CONNECTING:
            worker.pool.release(conn)
            return
        self._attach(conn)

    def _attach(self, conn) -> None:
        self._move(SENT)
        self.conn = conn
        self.sent_at = perf_counter()
        body = self.body
        if body:
            data = self.head + b"".join(body)
            body.clear()
            if self.body_bytes > BODY_BUFFER_LIMIT:
                self.proto.flow.unblock(flow.BODY)
            self.body_bytes = 0
        else:
            data = self.head
        conn.attach(self, data)
        deadline = self.proto.deadline
        if self.action.backend_timeout > 0:  # a new attempt: its own deadline
            deadline.after(ATTEMPT, self.action.backend_timeout)
        if self.req_done:
            self._response_due()

    def _response_due(self) -> None:
        limit = self.proto.limits.upstream_response_timeout
        if limit:
            self.proto.deadline.after(RESPONSE, limit)

    # --- request body (from the downstream parser) --------------------------------

    def body_chunk(self, chunk: bytes) -> None:
        self.req_bytes += len(chunk)
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
        if _OVER >> self.state & 1:
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
                self.proto.flow.block(flow.BODY)

    def request_finished(self) -> None:
        self.req_done = True
        over = _OVER >> self.state & 1
        if self.state == SENT:
            self._response_due()  # the upstream has the whole request now
        if self.chunked and (self.mirrors or not over):
            self.body_chunk(b"")  # frames as "0\r\n\r\n": the last chunk
        for mirror in self.mirrors:
            mirror.request_finished()
        if over:
            self.proto.exchange_done(self)

    # --- response (from the upstream connection) -----------------------------------

    def relay(self, data: bytes) -> None:
        """Response bytes for the client (dropped once it is gone)."""
        if self.state != ABANDONED:
            self.resp_bytes += len(data)
            self.proto.write(data)

    def response_head(self, block: bytes, status: int) -> bytes:
        """The final response head (``status``) arrived: the header block after the response filters.
        (The route's and the attempt's timeouts still run: they cover the whole response.)"""
        self.status = status
        self.proto.deadline.clear(RESPONSE)
        self._move(RESPONDING)
        if self.responses:
            block = respond(self.responses, self.req, block)
        return block

    def switching_protocols(self) -> None:
        """A 101 head is being relayed; the tunnel opens when the parser stops."""
        self.status = 101
        self.proto.deadline.clear(RESPONSE)
        self._move(RESPONDING)

    def end_by_close(self) -> None:
        """The response body ends when the upstream closes and the client speaks
        HTTP/1.0 (no chunked framing): our close must end it downstream too."""
        self.keep_alive = False

    def connection_header(self) -> bytes:
        """The downstream Connection header and the head's last CRLF."""
        rid = b"x-request-id: " + self.rid
        if self.keep_alive and not self.proto.closing_after_response():
            return rid + (b"\r\nconnection: keep-alive\r\n\r\n" if self.http10 else b"\r\n\r\n")
        self.keep_alive = False
        return rid + b"\r\nconnection: close\r\n\r\n"

    def response_done(self, conn, reusable: bool) -> None:
        self.conn = None
        self.upstream_s = perf_counter() - self.sent_at
        self.proto.meter.upstream(self.source, self.cluster.name, self.upstream_s)
        if reusable and self.req_done and not self.upgrade:
            self.proto.pool.release(conn)
        else:
            conn.close()
        if self.state == ABANDONED:
            return
        self._move(DONE)
        self._response_finished()

    def _response_finished(self) -> None:
        self._clear_deadlines()
        # Finished only when the request was read to its end too; if the response
        # came first (a 404, an early 413), the rest of the body is read and
        # dropped, then request_finished() finishes the exchange.
        if self.req_done:
            self.proto.exchange_done(self)

    def _clear_deadlines(self) -> None:
        if self.local is None:
            self.proto.deadline.clear_exchange()

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.proto.flow.block(flow.UPSTREAM)
        else:
            self.proto.flow.unblock(flow.UPSTREAM)

    # --- failures ---------------------------------------------------------------

    def upstream_failed(self, conn, reason: str) -> None:
        """The upstream connection died or sent garbage before the response ended."""
        self.conn = None
        conn.close()
        if _OVER >> self.state & 1:
            return
        if self.state == RESPONDING:
            self.proto.meter.upstream_error(self.source, self.cluster.name, "reset")
            log.warning("upstream failed mid-response", extra={"fields": {
                "cluster": self.cluster.name, "error": reason}})
            self._cut()
            return
        self.attempts += 1
        # A pooled connection may have been closed by the upstream just as we
        # sent on it: replay a body-less request once more on a fresh one. That
        # is the keep-alive race, not an upstream error: not counted.
        if self.replayable and self.attempts < MAX_ATTEMPTS and conn.uses > 1:
            self._open()
            return
        self.proto.meter.upstream_error(self.source, self.cluster.name, "reset")
        r = self.retry
        if r is not None and (r.reset or 502 in r.codes) and self.may_retry():
            self._retry(reason)
            return
        log.warning("upstream failed", extra={"fields": {
            "cluster": self.cluster.name, "upstream": f"{conn.key[0]}:{conn.key[1]}", "error": reason}})
        self._fail(502)

    def _cut(self) -> None:
        """A response broke off after it started: close the client's connection
        at once, so a truncated response never looks complete."""
        self._move(ABANDONED)
        self._clear_deadlines()
        self.proto.abort()

    # --- retries ----------------------------------------------------------------

    def may_retry(self) -> bool:
        """The policy has a retry left and the request can be sent again whole."""
        r = self.retry
        return (r is not None and self.retries < r.attempts and self.kept is not None
                and bool(_RETRYABLE >> self.state & 1))

    def retry_status(self, conn, status: int) -> None:
        """The upstream answered a status the policy retries (``conn`` is closed)."""
        self.conn = None
        self._retry(f"status {status}")

    def _retry(self, why: str) -> None:
        self.retries += 1
        self.proto.meter.retry(self.source, self.cluster.name)
        deadline = self.proto.deadline
        deadline.clear(ATTEMPT)
        deadline.clear(RESPONSE)
        log.info("retrying upstream request", extra={"fields": {
            "cluster": self.cluster.name, "upstream": f"{self.endpoint[0]}:{self.endpoint[1]}",
            "why": why, "retry": self.retries}})
        # Everything framed so far goes again; what arrives later follows it.
        self.body = list(self.kept)
        self.body_bytes = self.kept_bytes
        if self.retry.backoff > 0:
            self._move(BACKOFF)
            deadline.after(RETRY, self.retry.backoff)
        else:
            self._retry_now()

    def _retry_now(self) -> None:
        nxt = self.cluster.pick(skip=self.endpoint)
        if nxt is None:  # the endpoints went away meanwhile
            self._fail(503)
            return
        self.endpoint = nxt
        conn = self.proto.pool.acquire(nxt)
        if conn is not None:
            self._attach(conn)
        else:
            self._open()

    # --- deadlines (from the connection's Deadline, through the protocol) --------

    def deadline_passed(self, kind: int) -> None:
        if _OVER >> self.state & 1:
            return
        if kind == RETRY:
            if self.state == BACKOFF:
                self._retry_now()
        elif kind == ROUTE:
            self._timed_out()
        else:  # ATTEMPT (timeouts.backendRequest) or RESPONSE (no response head in time)
            self.proto.meter.upstream_error(self.source, self.cluster.name, "timeout")
            r = self.retry
            if r is not None and 504 in r.codes and self.may_retry():
                conn, self.conn = self.conn, None
                if conn is not None:
                    conn.abort()
                self._retry("per-try timeout")
                return
            self._timed_out()

    def _timed_out(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if self.state == RESPONDING or self.state == TUNNEL:
            self._cut()
        else:
            self._fail(504)

    def _fail(self, status: int) -> None:
        close = not self.keep_alive or self.proto.closing_after_response()
        self.keep_alive = not close
        data = _with_id(responses.error(status, close, self.head_only, self.rid), self.rid)
        self.status, self.resp_bytes = status, len(data)
        self.proto.write(data)
        self._move(DONE)
        self._response_finished()

    def abandon(self) -> None:
        """The downstream connection is gone: release everything at once."""
        if self.state == ABANDONED:
            return
        tunnel = self.state == TUNNEL
        self._move(ABANDONED)
        self._clear_deadlines()
        conn, self.conn = self.conn, None
        if conn is not None:
            if tunnel:
                conn.close()  # the client's last bytes (a close frame) still go out
            else:
                conn.abort()

    # --- tunnels (WebSocket) ----------------------------------------------------

    def tunnel_open(self, conn) -> None:
        """The upstream switched protocols (101, already relayed)."""
        self._move(TUNNEL)
        self._clear_deadlines()  # request timeouts end with the handshake
        self.proto.tunnel_open(conn)

    def tunnel_closed(self) -> None:
        self.conn = None
        if self.state == ABANDONED:
            return
        self._move(DONE)
        self.proto.tunnel_closed()


def _with_id(response: bytes, rid: bytes) -> bytes:
    """A response the gateway made, with the request's x-request-id after its status line."""
    i = response.find(b"\r\n") + 2
    return b"".join((response[:i], b"x-request-id: ", rid, b"\r\n", response[i:]))


def _status_of(response: bytes) -> int:
    """The status of a response the gateway made ("HTTP/1.1 404 ...")."""
    try:
        return int(response[9:12])
    except ValueError:
        return 0


def answered(proto, data: bytes, keep_alive: bool, http10: bool = False, head_only: bool = False,
             req=None) -> Exchange:
    """An exchange the gateway answers itself with ``data`` (a complete response)."""
    return Exchange(proto, req, keep_alive, http10, head_only, data)


def proxied(proto, req, head: bytes, cluster, endpoint, action, responses_: tuple) -> Exchange:
    """An exchange that sends ``req`` (framed as ``head``) to ``endpoint`` of ``cluster``."""
    ex = Exchange(proto, req, req.keep_alive, req.http10, req.head_only, None, head, cluster, endpoint,
                  action, responses_)
    if req.mirrors:  # chosen by RequestMirror filters; they get the final head
        worker = proto.worker
        ex.mirrors = tuple(Mirror(worker, cluster, head, req.head_only) for cluster in req.mirrors)
    return ex
