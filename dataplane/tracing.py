"""Tracing: W3C trace context to every upstream, a server span for each sampled request.

Off (no FLUXGATE_OTLP_ENDPOINT) there is no Tracer: the client's
``traceparent`` and ``tracestate`` reach the upstream exactly as sent
(request.py), and nothing else happens.

On, each request (``start``, from the head reader, request.py) gets a span:

* a valid client ``traceparent`` is its parent: same trace id, and the
  parent's sampled flag decides (parent based);
* without one, or with one that is not valid W3C (version ``ff``, upper-case
  or short hex, all-zero ids, two headers), a new trace: its id is random and
  the ratio FLUXGATE_TRACE_SAMPLING decides, by the trace id's low 64 bits as
  OpenTelemetry's TraceIdRatioBased does;
* the upstream gets ``traceparent: 00-<trace id>-<this span's id>-<01|00>``
  in place of the client's (retries and mirrors send the same); ``tracestate``
  passes unchanged.

An unsampled request costs two slices of a pool of ready-made values (one
``os.urandom`` per ``_ENTRIES`` requests makes their ids) and one comparison
(about 0.2 µs compiled, the refill included). A sampled one also appends a
tuple of what its span needs when its exchange ends (``finish``, from
``Exchange._ended``; its fields are common/channel.py's SPAN_FIELDS).

The worker never makes an OpenTelemetry span: the tuples go in batches
(``FLUSH_SECONDS`` after the first, or at ``MAX_BATCH``) over the channel to
the control process (a ``T`` message, msgpack), whose export thread encodes
them as OTLP spans and sends them with the OTLP/HTTP exporter
(control/tracing.py, control/otlp.py). Encoding a span is tens of µs of
Python: done here, it held the loop off the GIL (p99 latency 3x, throughput
-10% at 1% sampling, measured), and every worker imported OpenTelemetry. The
loop never waits: a batch the channel cannot take now is dropped and
counted, ``fluxgate_trace_spans_dropped_total{reason="queue_full"}`` (the
worker's CONNECTIONS record in shm/metrics.py); the control process counts
what it exports or drops after that.
"""

from __future__ import annotations

import os
import re
import time
from time import perf_counter

from common import channel

FLUSH_SECONDS = 0.5  # a batch goes to the control process this long after its first span
MAX_BATCH = 64  # or at this many spans (a few hundred bytes each: one message holds them)
# A record's longest path and user agent (a span attribute beyond this helps
# nobody; the head limit allows far more, and a message must fit the channel).
MAX_TEXT = 2048
MAX_STATE = 512  # W3C trace context 3.3.1.5: a longer tracestate may be dropped (the span's, never the upstream's)

# The pool: _ENTRIES values "00-<32 hex trace id>-<16 hex span id>-00", one
# every _STRIDE bytes from _AT, laid out so that the trace id starts on an
# 8-byte word (the span id one byte after one): _refill copies them a word at
# a time.
_ENTRIES = 1024
_STRIDE, _AT = 64, 5
_TEMPLATE = (b"\0" * 5 + b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-00" + b"\0" * 4) * _ENTRIES
_TRACE_AT, _SPAN_AT = _AT + 3, _AT + 36  # where a value's trace id and span id are: bytes 8 and 41
assert len(_TEMPLATE) == _STRIDE * _ENTRIES and _TRACE_AT % 8 == 0 and _SPAN_AT % 8 == 1

_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(?:-.*)?", re.S)
_HEX = b"0123456789abcdef"


def valid(value: bytes) -> bool:
    """A W3C trace context ``traceparent`` value this gateway can continue."""
    n = len(value)
    if n == 55:  # the usual one, without a regex: three dashes where they belong, hex digits elsewhere
        if value[2] != 45 or value[35] != 45 or value[52] != 45 or value.translate(None, _HEX) != b"---":
            return False
    elif n < 55 or _TRACEPARENT.fullmatch(value) is None or value[:2] == b"00":  # version 00 is 55 bytes
        return False
    # Not version ff, and neither id all zeros (one test, usually: its first digit is not 0).
    return not (value[0] == 102 and value[1] == 102) \
        and (value[3] != 48 or value.count(b"0", 3, 35) != 32) \
        and (value[36] != 48 or value.count(b"0", 36, 52) != 16)


def bound(ratio: float) -> bytes:
    """The sampling ratio as a 16-digit hex bound: a new trace is sampled when its
    id's low 64 bits, in lower-case hex, compare below it (b"g" is above them all)."""
    if ratio <= 0:
        return b""
    limit = round(ratio * (1 << 64))
    return b"g" if limit >= 1 << 64 else b"%016x" % limit


class Tracer:
    __slots__ = ("batch", "worker", "_bound", "_pool", "_next", "_end", "_loop", "_meter", "_send")

    def __init__(self, loop, meter, send, *, ratio: float = 1.0, worker: int = 0) -> None:
        """``send(message)``: the worker's end of its channel (``socket.send``);
        raises BlockingIOError when the channel is full, OSError when the control
        process is gone. ``worker``: this worker's index (a span attribute)."""
        self.batch: list[tuple] = []
        self.worker = worker
        self._bound = bound(ratio)
        self._pool = b""
        self._next = self._end = 0  # the next value's offset in the pool; the pool's length
        self._loop = loop
        self._meter = meter
        self._send = send

    @classmethod
    def open(cls, settings, loop, meter, send) -> "Tracer | None":
        """The tracer the settings ask for (None: tracing off)."""
        if not settings.otlp_endpoint:
            return None
        return cls(loop, meter, send, ratio=settings.trace_sampling, worker=settings.index)

    # --- per request (the loop) ------------------------------------------------------

    def start(self, parent: bytes) -> bytes:
        """A request's span, its parent the client's ``traceparent`` (``parent``,
        b"" without one): the ``traceparent`` the upstream gets. Sampled when
        its flags end in "1" (``value[54]``)."""
        o = self._next
        if o == self._end:
            self._refill()
            o = 0
        self._next = o + _STRIDE
        if parent and valid(parent):
            c = parent[54]  # the flags' last hex digit: its low bit is "sampled"
            return b"".join((parent[:35] if parent[0] == parent[1] == 48 else b"00" + parent[2:35],  # version 00
                             self._pool[o + _SPAN_AT - 1:o + _SPAN_AT + 16],
                             b"-01" if (c - 48 if c <= 57 else c - 87) & 1 else b"-00"))
        pool = self._pool
        if pool[o + _TRACE_AT + 16:o + _TRACE_AT + 32] < self._bound:  # the trace id's low 64 bits
            return pool[o + _AT:o + _AT + 54] + b"1"
        return pool[o + _AT:o + _AT + 55]

    def _refill(self) -> None:
        """_ENTRIES new values: their ids from one os.urandom, copied in 8 bytes at a time."""
        ids = memoryview(os.urandom(24 * _ENTRIES).hex().encode()).cast("Q")  # 6 words a value
        buf = bytearray(_TEMPLATE)
        words = _STRIDE // 8
        trace = memoryview(buf).cast("Q")
        for j in range(4):
            trace[_TRACE_AT // 8 + j::words] = ids[j::6]
        span = memoryview(buf)[1:1 + 8 * (_ENTRIES * words - 1)].cast("Q")  # words from byte 1 on
        for j in range(2):
            span[_SPAN_AT // 8 + j::words] = ids[4 + j::6]
        trace.release()
        span.release()
        self._pool = bytes(buf)
        self._end = len(self._pool)

    def finish(self, ex, seconds: float) -> None:
        """A sampled request's exchange ended (``Exchange._ended``): its span, for export."""
        req = ex.req
        cluster = ex.cluster
        path, ua, state = req.path, req.user_agent, req.tracestate
        self.batch.append((  # common/channel.py SPAN_FIELDS
            req.traceparent, req.trace_in, state if len(state) <= MAX_STATE else b"", ex.t0, seconds, req.method,
            path if len(path) <= MAX_TEXT else path[:MAX_TEXT], req.scheme, req.host[:MAX_TEXT], req.port,
            req.client, ua if len(ua) <= MAX_TEXT else ua[:MAX_TEXT], req.http10, ex.status, ex.source,
            ex.gateway, ex.endpoint if ex.sent_at else None, cluster.name if cluster is not None else "",
            ex.rid, ex.req_bytes,
        ))
        n = len(self.batch)
        if n == 1:
            self._loop.call_later(FLUSH_SECONDS, self.flush)
        elif n >= MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Send the batch to the control process; what the channel cannot take now is dropped."""
        batch = self.batch
        if not batch:
            return
        self.batch = []
        self._post(batch, time.time_ns(), perf_counter())

    def _post(self, batch: list, unix_ns: int, perf: float) -> None:
        message = channel.spans_message(self.worker, unix_ns, perf, batch)
        if len(message) > channel.MAX_MESSAGE and len(batch) > 1:  # long paths: in halves
            half = len(batch) // 2
            self._post(batch[:half], unix_ns, perf)
            self._post(batch[half:], unix_ns, perf)
            return
        try:
            if len(message) > channel.MAX_MESSAGE:
                raise BlockingIOError  # one record alone too large: dropped
            self._send(message)
        except OSError:  # full (BlockingIOError), or the control process is gone
            self._meter.spans_dropped(len(batch))  # reason="queue_full"

    def close(self) -> None:
        """Send what is left (a worker's exit)."""
        self.flush()
