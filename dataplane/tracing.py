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
``Exchange._ended``). Like the access
log's lines, the tuples go in batches (``FLUSH_SECONDS`` after the first, or
at ``MAX_BATCH``) to the export thread, which makes OpenTelemetry SDK spans
of them and sends them with the OTLP/HTTP exporter (dataplane/otlp.py, the
only module that imports OpenTelemetry). The loop never waits for it: at
most FLUXGATE_TRACE_QUEUE_SIZE spans wait for export; beyond, spans are
dropped and counted, as are those whose export failed (a collector refusing,
unreachable or slower than FLUXGATE_OTLP_TIMEOUT): the meter's
``fluxgate_trace_spans_dropped_total{reason}`` beside
``fluxgate_trace_spans_exported_total`` (the TRACE kind in shm/metrics.py).
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import re
import sys
import threading
import time
from time import perf_counter

log = logging.getLogger("fluxgate.tracing")

FLUSH_SECONDS = 0.5  # a batch goes to the export thread this long after its first span
MAX_BATCH = 512  # or at this many spans; also the most one export sends (roughly)
LOG_EVERY = 10.0  # seconds between two logged export failures
SWITCH_SECONDS = 0.001  # the GIL's switch interval while tracing is on (Tracer.open)

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


class TracingError(Exception):
    """Tracing is asked for (FLUXGATE_OTLP_ENDPOINT) and cannot run."""


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
    __slots__ = ("batch", "pending", "queue_size", "_bound", "_pool", "_next", "_end", "_loop", "_meter",
                 "_exporter", "_queue", "_thread", "_lock", "_quiet_until", "_failed_quietly")

    def __init__(self, loop, meter, exporter, *, ratio: float = 1.0, queue_size: int = 2048) -> None:
        """``exporter``: ``export(batches) -> bool`` and ``shutdown()``, called on the export
        thread (dataplane/otlp.py; tests give their own)."""
        self.batch: list[tuple] = []
        self.pending = 0  # spans handed to the export thread and not yet exported or dropped
        self.queue_size = queue_size
        self._bound = bound(ratio)
        self._pool = b""
        self._next = self._end = 0  # the next value's offset in the pool; the pool's length
        self._loop = loop
        self._meter = meter
        self._exporter = exporter
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._quiet_until, self._failed_quietly = 0.0, 0
        self._thread = threading.Thread(target=self._export, name="fluxgate-trace-export", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, settings, loop, meter) -> "Tracer | None":
        """The tracer the settings ask for (None: tracing off). Raises TracingError."""
        if not settings.otlp_endpoint:
            return None
        try:
            from dataplane.otlp import Exporter
        except ImportError as exc:
            raise TracingError(f"FLUXGATE_OTLP_ENDPOINT is set but OpenTelemetry cannot be imported ({exc}):"
                               " install fluxgate[otel]") from None
        exporter = Exporter(settings)
        # OpenTelemetry's modules live as long as the worker: out of the
        # collector's way, like everything else start-up made (worker.py).
        gc.freeze()
        # Encoding spans is Python work (OpenTelemetry's encoder: tens of µs a
        # span): while the export thread runs, the loop would wait up to the
        # interpreter's switch interval (5 ms) for the GIL after each poll.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_SECONDS))
        return cls(loop, meter, exporter, ratio=settings.trace_sampling, queue_size=settings.trace_queue_size)

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
        self.batch.append((
            req.traceparent, req.trace_in, req.tracestate, ex.t0, seconds, req.method, req.path, req.scheme,
            req.host, req.port, req.client, req.user_agent, req.http10, ex.status, ex.source, ex.gateway,
            ex.endpoint if ex.sent_at else None, cluster.name if cluster is not None else "", ex.rid,
            ex.req_bytes,
        ))
        n = len(self.batch)
        if n == 1:
            self._loop.call_later(FLUSH_SECONDS, self.flush)
        elif n >= MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the batch to the export thread; what does not fit in the queue is dropped."""
        batch = self.batch
        if not batch:
            return
        self.batch = []
        with self._lock:
            room = max(0, self.queue_size - self.pending)
            if room < len(batch):
                self._meter.spans_dropped(len(batch) - room, False)  # reason="queue_full"
                batch = batch[:room]
                if not batch:
                    return
            self.pending += len(batch)
        # The clocks now: the thread turns the spans' perf_counter times into Unix nanoseconds.
        self._queue.put((batch, time.time_ns(), perf_counter()))

    def close(self, timeout: float = 2.0) -> None:
        """Export what is left (a worker's exit), waiting at most ``timeout``."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout)
        self._exporter.shutdown()  # also ends an export that still waits out a retry

    # --- the export thread --------------------------------------------------------------

    def _export(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            n = len(item[0])
            while n < MAX_BATCH:  # batches that waited meanwhile go in the same export
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
                n += len(more[0])
            try:
                ok = self._exporter.export(items)
            except Exception as exc:  # never let one bad batch stop the thread
                ok = False
                log.error("trace export raised", extra={"fields": {"error": repr(exc)}})
            with self._lock:
                self.pending -= n
            if ok:
                self._meter.spans_exported(n)
            else:
                self._meter.spans_dropped(n, True)  # reason="export_failed"
                self._failed(n)

    def _failed(self, n: int) -> None:
        """At most one log line per LOG_EVERY seconds, saying how many spans it stands for."""
        now = time.monotonic()
        self._failed_quietly += n
        if now < self._quiet_until:
            return
        log.warning("trace export failed; spans dropped", extra={"fields": {
            "spans": self._failed_quietly, "queued": self.pending}})
        self._quiet_until, self._failed_quietly = now + LOG_EVERY, 0
