"""The pod's span export: the workers' span records → OTLP, on one thread of the control process.

Workers sample and record (dataplane/tracing.py) and send their records over
their channels (``T`` messages, common/channel.py); the supervisor's channel
reader hands each message to ``receive`` on the loop, which only counts and
queues it. The export thread decodes the messages, encodes the records as
OTLP spans and sends them with the OTLP/HTTP exporter (control/otlp.py). So
no worker imports OpenTelemetry or spends its GIL on encoding, and the pod
keeps one connection to the collector, not one per worker.

Bounded: a message is queued while fewer than FLUXGATE_TRACE_QUEUE_SIZE spans
wait for export (so at most that plus one message, 64 spans); otherwise it is
dropped whole (reason ``queue_full``, like a worker's channel that is full;
it is not decoded on the loop to keep part of it), and a batch the collector refuses, cannot be reached for, or
does not answer within FLUXGATE_OTLP_TIMEOUT is dropped (``export_failed``),
logged at most once per LOG_EVERY seconds. A dead collector slows nothing but
this thread. The counts join the workers' in
``fluxgate_trace_spans_{exported,dropped}_total`` (control/metrics.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from common import channel

log = logging.getLogger("fluxgate.tracing")

MAX_BATCH = 512  # spans in one export
# An export waits this long after its first message for more (up to
# MAX_BATCH spans), as the SDK's batch processor does: each export costs
# this process about 1.5 ms of CPU before its first span (the HTTP client), a
# span about 45 µs (measured), so exporting a worker's message at a time (a
# few a second) put as much into the request as the spans themselves.
EXPORT_SECONDS = 1.0
LOG_EVERY = 10.0  # seconds between two logged export failures


class SpanExport:
    def __init__(self, exporter, queue_size: int = 2048, delay: float = EXPORT_SECONDS) -> None:
        """``exporter``: ``export(batches) -> bool`` and ``shutdown()``, called on the
        export thread (control/otlp.py; tests give their own). ``delay``: EXPORT_SECONDS."""
        self.queue_size = queue_size
        self.delay = delay
        self.pending = 0  # spans queued or being exported
        self.exported = 0
        self.queue_full = 0  # dropped here (the workers count their own)
        self.failed = 0  # dropped: the export failed
        self.malformed = 0  # messages that did not decode (a bug: logged)
        self._exporter = exporter
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._quiet_until, self._failed_quietly = 0.0, 0
        self._thread = threading.Thread(target=self._export, name="fluxgate-trace-export", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, cfg) -> "SpanExport | None":
        """The export the Config asks for (None: tracing off). Config validation
        has checked that OpenTelemetry can be imported."""
        if not cfg.otlp_endpoint:
            return None
        from control.otlp import Exporter

        return cls(Exporter(cfg), cfg.trace_queue_size)

    # --- the loop ----------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """A worker's ``T`` message: queued whole, or dropped whole when the queue is full."""
        try:
            n = channel.span_count(data)
        except ValueError:
            self._malformed("no span count")
            return
        with self._lock:
            if self.pending >= self.queue_size:
                self.queue_full += n
                return
            self.pending += n
        self._queue.put((data, n))

    def close(self, timeout: float = 2.0) -> None:
        """Export what is queued (the pod's exit), waiting at most ``timeout``."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._exporter.shutdown()  # also ends an export that still waits out a retry

    def counts(self) -> tuple[int, int, int]:
        """(exported, dropped queue_full, dropped export_failed) by this process."""
        return self.exported, self.queue_full, self.failed

    # --- the export thread --------------------------------------------------------------

    def _export(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            n = item[1]
            until = time.monotonic() + self.delay
            while n < MAX_BATCH:  # messages that come meanwhile go in the same export
                try:
                    more = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
                n += more[1]
            batches, lost = [], 0
            for data, count in items:
                try:
                    batches.append(channel.parse_spans(data))
                except ValueError as exc:
                    lost += count
                    self._malformed(str(exc))
            ok = False
            if batches:
                try:
                    ok = self._exporter.export(batches)
                except Exception as exc:  # never let one bad batch stop the thread
                    log.error("trace export raised", extra={"fields": {"error": repr(exc)}})
            sent = n - lost
            with self._lock:
                self.pending -= n
                if ok:
                    self.exported += sent
                else:
                    self.failed += sent
                self.failed += lost
            if not ok and sent:
                self._failed(sent)

    def _failed(self, n: int) -> None:
        """At most one log line per LOG_EVERY seconds, saying how many spans it stands for."""
        now = time.monotonic()
        self._failed_quietly += n
        if now < self._quiet_until:
            return
        log.warning("trace export failed; spans dropped", extra={"fields": {
            "spans": self._failed_quietly, "queued": self.pending}})
        self._quiet_until, self._failed_quietly = now + LOG_EVERY, 0

    def _malformed(self, why: str) -> None:
        with self._lock:  # the loop and the export thread both find malformed messages
            self.malformed += 1
            first = self.malformed <= 3
        if first:  # a worker/control mismatch: say it, but not per message
            log.error("malformed span message from a worker", extra={"fields": {"error": why}})
