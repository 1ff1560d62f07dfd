"""A worker process: subscribe to the ring, serve the table, drain on SIGTERM.

Theory of operation: the supervisor sends ``!`` on this worker's channel
(common/channel.py) after every publish; the worker then checks the ring header (a cheap
seqlock read), pins and verifies the new generation, builds a ``Router`` and
swaps it in between two events of the loop, so a request is routed wholly by
one generation. A tick every ``heartbeat_interval`` also polls the ring (in
case a byte was lost), heart-beats, and sweeps idle upstream connections.
Client connections keep their own deadlines (deadline.py: one timer each).

The listening sockets come over the channel too (``L``, before the table
that needs them): the control process owns them, so a worker's death loses no
queued connection (control/sockets.py).

A ``c`` on the channel says the pod shuts down: from then on every response
carries ``Connection: close`` (the worker keeps accepting until its own
SIGTERM). The channel doubles as a lifeline: EOF on it means the control process is gone,
and an orphaned worker drains and exits instead of serving a stale table
forever.

Exit codes (the supervisor reads them):
  0  drained and stopped as asked
  3  cannot boot (bad settings, no ring): restarting will not help
  4  lost the control process (orphaned)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time

import msgspec
import uvloop

import dataplane

from dataplane.accesslog import AccessLog
from dataplane.listeners import Listeners
from dataplane.metrics import Meter
from dataplane.outbox import Outbox
from dataplane.router import Router
from dataplane.tracing import Tracer
from dataplane.upstream.pool import Pool
from common import channel, logfmt
from shm import codec, metrics
from shm.ring import RingError, RingReader
from shm.schema import SCHEMA_VERSION, WorkerSettings

log = logging.getLogger("fluxgate.worker")

EXIT_OK = 0
EXIT_BOOT = 3
EXIT_ORPHAN = 4
GC_THRESHOLD = 20000
LOG_EVERY = 10.0  # seconds between two logged table errors (the rest are counted)


class Worker:
    def __init__(self, settings: WorkerSettings, channel_fd: int) -> None:
        # process
        self.settings = settings
        self.channel = socket.socket(fileno=channel_fd)
        self.channel.setblocking(False)
        self.loop = asyncio.get_event_loop()
        self.reader = RingReader(settings.shard, settings.index, schema=SCHEMA_VERSION)
        # This slot's counters, continued from its predecessor's (shm/metrics.py).
        self.metrics = metrics.Segment(settings.shard, settings.seats, create=False)
        self.meter = Meter(self.metrics.region(settings.index))
        self.access_log = AccessLog.open(settings, self.loop, self.meter)
        # dataplane/tracing.py (None: off); its spans go to the control process over the channel.
        self.tracer = Tracer.open(settings, self.loop, self.meter, self.channel.send)
        self.router: Router | None = None
        self.pool = Pool(settings.upstream_keepalive, settings.upstream_idle_timeout)
        self.outbox = Outbox(self.loop)  # every socket write, once per loop iteration
        self.listeners = Listeners(self)
        self.connections: set = set()
        self.requests = 0
        self.draining = False  # stopped accepting (SIGTERM)
        # Every response says "Connection: close" (the pod is going away:
        # clients must not send another request on this connection). Set at
        # the control process's SIGTERM, before the workers' own.
        self.closing = False
        self.exit_code = EXIT_OK
        self._refreshing = False
        self._quiet_until, self._held_back = 0.0, 0  # _log_limited
        self._done = self.loop.create_future()

    # --- table ------------------------------------------------------------------

    def refresh(self) -> None:
        """Swap in a new generation if there is one (never two at once)."""
        if self._refreshing or self.draining or not self.reader.changed():
            return
        self._refreshing = True
        self.loop.create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            snap = self.reader.acquire()
            if snap is None:
                return
            table = codec.decode_index(snap.view)
            router = Router(table, previous=self.router, on_damage=self._damaged)
            await self.listeners.sync(table.listeners)
            # Swap, then let go of the old generation before reporting the new
            # one: once the old Router is gone nothing refers to its slot.
            self.router = router
            del router, table, snap
            self.reader.commit()
            log.debug("serving generation", extra={"fields": {"generation": self.reader.generation}})
        except (RingError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._log_limited("cannot load table; still serving the previous one", {"error": str(exc)})
        finally:
            self._refreshing = False
        if self.reader.changed():
            self.refresh()

    def _damaged(self, kind: str, name: str) -> None:
        """A blob of the table in use failed its checksum (router.py): never
        served; the control process republishes from its own copy."""
        self.reader.report_integrity()
        self._log_limited("table integrity: checksum mismatch; not serving it until the next table",
                          {"generation": self.reader.generation, "kind": kind, "name": name})

    def _log_limited(self, message: str, fields: dict) -> None:
        """At most one such error per LOG_EVERY seconds, saying how many it held back."""
        now = time.monotonic()
        if now < self._quiet_until:
            self._held_back += 1
            return
        if self._held_back:
            fields = {**fields, "held_back": self._held_back}
        self._quiet_until, self._held_back = now + LOG_EVERY, 0
        log.error(message, extra={"fields": fields})

    def _on_channel(self) -> None:
        """Every message the control process sent (common/channel.py), in order."""
        while True:
            try:
                got = channel.receive(self.channel)
            except OSError:
                got = (b"", [])
            if got is None:
                return
            data, fds = got
            if not data:
                self.loop.remove_reader(self.channel.fileno())
                for fd in fds:
                    os.close(fd)
                if not self.draining:
                    log.error("control process is gone; draining")
                    self.exit_code = EXIT_ORPHAN
                    self.drain()
                return
            kind = data[:1]
            if kind == channel.SOCKETS:
                self._offered(data, fds)
                continue
            for fd in fds:  # no other message carries any
                os.close(fd)
            if kind == channel.CLOSING:
                if not self.closing:
                    self.closing = True
                    log.info("shutting down: every response closes its connection")
            elif kind == channel.TABLE:
                self.refresh()

    def _offered(self, data: bytes, fds: list[int]) -> None:
        try:
            entries, done = channel.parse_sockets(data, fds)
        except (ValueError, KeyError, TypeError) as exc:
            for fd in fds:
                os.close(fd)
            log.error("bad sockets message from the control process", extra={"fields": {"error": str(exc)}})
            return
        if self.draining:
            for _, _, fd in entries:
                os.close(fd)
            return
        self.listeners.offer(entries, done)
        if done and self.router is not None:
            self.loop.create_task(self.listeners.sync(self.router.table.listeners))

    # --- housekeeping -------------------------------------------------------------

    def _tick(self) -> None:
        if self._done.done():
            return
        self.reader.requests = self.requests
        self.reader.heartbeat()
        self.pool.sweep(time.monotonic())
        self.refresh()
        self.loop.call_later(self.settings.heartbeat_interval, self._tick)

    # --- stopping -------------------------------------------------------------------

    def drain(self) -> None:
        """Stop accepting, finish in-flight requests, stop within the deadline."""
        if self.draining:
            return
        self.draining = self.closing = True
        self.listeners.close()
        for conn in list(self.connections):
            conn.close_if_between_requests()
        deadline = time.monotonic() + self.settings.drain_seconds
        self.loop.create_task(self._drain(deadline))

    async def _drain(self, deadline: float) -> None:
        while self.connections and time.monotonic() < deadline:
            for conn in list(self.connections):
                conn.close_if_between_requests()
            await asyncio.sleep(0.02)
        self.outbox.flush()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.pool.close_all()
        self.outbox.flush()
        if not self._done.done():
            self._done.set_result(None)

    async def run(self) -> int:
        loop = self.loop
        loop.add_signal_handler(signal.SIGTERM, self.drain)
        loop.add_signal_handler(signal.SIGQUIT, self.drain)
        loop.add_reader(self.channel.fileno(), self._on_channel)
        self.refresh()
        loop.call_later(self.settings.heartbeat_interval, self._tick)
        await self._done
        if self.access_log is not None:
            self.access_log.close()
        if self.tracer is not None:
            self.tracer.close()
        self.reader.heartbeat()
        return self.exit_code


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m dataplane")
    ap.add_argument("--settings", required=True, help="WorkerSettings as JSON")
    ap.add_argument("--channel-fd", type=int, required=True, help="common/channel.py")
    args = ap.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group; the supervisor
    # decides how workers stop, so they ignore SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        settings = msgspec.json.decode(args.settings, type=WorkerSettings)
    except msgspec.DecodeError as exc:
        print(f"fluxgate worker: bad --settings: {exc}", file=sys.stderr)
        return EXIT_BOOT
    logfmt.setup(f"worker-{settings.index}", settings.log_level, settings.log_format)
    # Per-request objects are short-lived and acyclic once an exchange ends;
    # the default gen-0 threshold (700) makes the collector run every few
    # dozen requests. Freeze what start-up made and collect far less often.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        try:
            worker = Worker(settings, args.channel_fd)
        except (RingError, metrics.MetricsError, OSError) as exc:
            log.error("cannot start worker", extra={"fields": {"error": str(exc)}})
            return EXIT_BOOT
        log.info("worker started", extra={"fields": {
            "index": settings.index, "pid": os.getpid(),
            "compiled": len(dataplane.compiled()), "of": len(dataplane.NATIVE)}})
        return loop.run_until_complete(worker.run())
    finally:
        loop.close()
