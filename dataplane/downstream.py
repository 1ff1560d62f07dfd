"""The downstream side of exchanges: a client connection as an Exchange sees it.

An Exchange (exchange.py) writes its response, pauses reading, sets its
deadlines and reports that it is finished through this interface, and
nothing else of the connection: ``worker``, ``loop``, ``pool``, ``meter``, ``access_log``, ``limits``,
``flow``, ``deadline``, ``request_started``, ``request_t0``, ``write``, ``abort``, ``closing_after_response``,
``exchange_done``, ``tunnel_open``, ``tunnel_closed``. The HTTP/1.1 protocol (protocol.py) is
one such downstream; an HTTP/2 stream will be another.

Rules (HTTP/1.1, where exchanges are pipelined):
* One exchange is ``active`` at a time; later ones wait in ``queue`` in
  request order. ``exchange_done`` of the active one starts the next, or
  makes the connection idle (IDLE deadline), or closes it after the response
  when the exchange does not keep the connection.
* Every write and graceful close goes through the worker's outbox, so a
  close never overtakes the last response; ``abort`` is immediate (a broken
  response must not look complete).
* More than FLUXGATE_MAX_PIPELINE queued exchanges pause reading.
"""

from __future__ import annotations

from collections import deque

from dataplane import flow
from dataplane.deadline import CLIENT, Deadline
from dataplane.limits import Limits

# What the connection waits for from its client (the Deadline's CLIENT kind).
NOTHING, HEAD, BODY, IDLE = range(4)


class Downstream:
    def __init__(self, worker) -> None:
        # process
        self.worker = worker
        self.loop = worker.loop
        self.outbox = worker.outbox
        self.settings = worker.settings
        self.limits = Limits(worker.settings)  # what is read per request, as plain numbers
        self.pool = worker.pool  # upstream keep-alive connections
        self.meter = worker.meter  # the worker's counters (dataplane/metrics.py)
        self.access_log = worker.access_log  # dataplane/accesslog.py, or None (off)
        # connection
        self.transport = None
        self.flow = None  # FlowControl, with the transport
        self.deadline = Deadline(self.loop, self)
        self.active = None  # the exchange being proxied
        self.queue = deque()  # exchanges waiting behind it (pipelining)
        self.current = None  # the exchange of the request being received
        self.tunnel = None  # the UpstreamConnection of an open WebSocket tunnel
        self._early = b""  # tunnel bytes the client sent before the upstream's 101
        self._closed = False
        self._refused = False  # a request was refused: nothing more is read
        self._in_head = False  # a request head is being received
        self._waiting = HEAD  # what the CLIENT deadline is for: HEAD, BODY, IDLE or NOTHING
        self.request_started = 0.0  # the loop's clock at the current request's first byte (deadlines)
        self.request_t0 = 0.0  # the same moment by perf_counter (durations: the loop's clock ticks in ms)

    # --- what exchanges call ----------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self._closed:
            self.meter.sent(len(data))
            self.outbox.write(self.transport, data)

    def abort(self) -> None:
        """Close at once: a response is broken and must not look complete."""
        if not self._closed:
            self._closed = self.flow.closed = True
            self.transport.abort()

    def closing_after_response(self) -> bool:
        # After a refusal, the responses before it keep the connection open
        # until the refusal's own answer (queued behind them) closes it.
        return self.worker.closing or (self._refused and not self.queue)

    def exchange_done(self, ex) -> None:
        """``ex`` was read to its end and answered: close, or start the next one."""
        if ex is not self.active or self._closed:
            return
        if not ex.keep_alive:
            self._close()  # queued behind the response: it goes out first
            return
        if self.queue:
            self.active = nxt = self.queue.popleft()
            if len(self.queue) < self.limits.max_pipeline and not self._refused:
                self.flow.unblock(flow.PIPELINE)
            nxt.start()
        else:
            self.active = None
            if not self._in_head:  # else the next request's head deadline stands
                self.wait_for(IDLE, self.loop.time() + self.limits.keepalive_timeout)

    def tunnel_open(self, conn) -> None:
        """The upstream answered 101: from now on bytes go both ways untouched."""
        self.tunnel = conn
        self.wait_for(NOTHING, 0.0)
        if self._early:
            conn.write(self._early)
            self._early = b""
        self.flow.unblock(flow.PIPELINE)

    def tunnel_closed(self) -> None:
        """The upstream side of the tunnel ended: close ours after what is queued."""
        self.tunnel = None
        if not self._closed:
            self._close()

    # --- the connection's own ------------------------------------------------------

    def wait_for(self, what: int, when: float) -> None:
        """The client's next deadline: ``what`` (HEAD, BODY, IDLE) due at
        ``when`` (the loop's clock); NOTHING clears it."""
        self._waiting = what
        if what == NOTHING:
            self.deadline.clear(CLIENT)
        else:
            self.deadline.set(CLIENT, when)

    def enqueue(self, ex) -> None:
        """A new request's exchange: active at once, or behind the others."""
        self.current = ex
        if self.active is None:
            self.active = ex
        else:
            self.queue.append(ex)
            if len(self.queue) >= self.limits.max_pipeline:
                self.flow.block(flow.PIPELINE)

    def abandon_all(self) -> None:
        """The connection is gone: every exchange lets go of what it holds."""
        self._closed = True
        if self.flow is not None:
            self.flow.closed = True
        self.deadline.close()
        if self.active is not None:
            self.active.abandon()
        for ex in self.queue:
            ex.abandon()
        self.queue.clear()
        self.active = self.current = None

    def pause_writing(self) -> None:
        flow.pause_upstream(self.active, True)

    def resume_writing(self) -> None:
        flow.pause_upstream(self.active, False)

    def deadline_passed(self, kind: int) -> None:
        """One of the Deadline's kinds is due: the exchange's own go to it."""
        if not self._closed and self.active is not None:
            self.active.deadline_passed(kind)

    def close_if_between_requests(self) -> bool:
        """Drain: close a kept-alive connection that waits for its next request.
        A new connection that has not sent its first request yet is left open:
        its client is sending one (the kernel may hold it unread), and closing
        would lose it; it is answered with ``Connection: close``, or its head
        deadline or the drain deadline ends it."""
        if self._waiting == IDLE:
            return self.close_if_idle()
        return False

    def close_if_idle(self) -> bool:
        if self.active is None and not self._closed:
            self._close()
            return True
        return False

    def _close(self) -> None:
        """Close after what is queued for the client (the outbox keeps the order)."""
        self._closed = self.flow.closed = True
        self.outbox.close(self.transport)
