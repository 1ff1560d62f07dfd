"""The control process of one shard: source → pipeline → publish; supervise; admin.

One asyncio loop owns the schedule and everything the admin server shows;
the table is built off the loop (control/pipeline.py), so /healthz, /readyz,
/debug/*, the supervisor's tick and signals answer during any rebuild:
* the source is a FileSource (``--config``) or a KubernetesSource
  (``--kubernetes``), both offering the pipeline the same interface
  (``fingerprint()``, ``changes()``); the loop compares the fingerprint every
  FLUXGATE_WATCH_INTERVAL, and the Kubernetes source also wakes the loop the
  moment a watch event changes it (``call_soon_threadsafe`` from its watch
  threads), so a publish follows an event by the hold-off, not by a poll;
* a change arms the hold-off (control/holdoff.py: FLUXGATE_HOLDOFF_MS after
  the latest change, never more than FLUXGATE_HOLDOFF_MAX_MS after the first;
  in Kubernetes mode a change after a quiet period is acted on at once); when
  it ends a build reads what changed into the cache, and only if the cache
  says something that matters changed is a table translated, compiled and
  encoded and staged in a free ring slot (in the build thread); the loop
  makes it current and tells
  the workers: a burst is one build and one publish (two in Kubernetes mode:
  its first event, then the rest);
* signal handlers only set what the loop acts on (reload, stop);
* the supervisor ticks every 0.5 s; the ring writer heart-beats every second.
  Only the loop touches the ring.

A rebuild that fails (a bug in translation, a ring that stays busy) is logged
and retried; the table that is live keeps serving. The admin server starts
first (/readyz says what the gateway waits for); the first table is published
before any worker starts, so a worker is never up without one. In Kubernetes
mode the first table waits for every watch's initial list (never a
half-listed world), and the source retries with back-off meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from prometheus_client import Histogram

from control.servers.admin import Admin
from control.compile import CompileMemo, compile_table
from control.config import Config, ConfigError
from control.explain import ExplainError, explain_request
from control.holdoff import Holdoff
from control.pipeline import Build, Pipeline, tune_process
from control.publish import Publisher
from control.sources.files import FileSource
from control.sockets import Sockets
from control.supervisor import Supervisor
from control.tracing import SpanExport
from control.warming import Warming
from shm import codec, metrics
from shm.ring import RingBusy, RingWriter
from shm.schema import SCHEMA_VERSION

log = logging.getLogger("fluxgate.control")

TICK = 0.5
EXIT_CONFIG = 2


class Runner:
    def __init__(self, cfg: Config) -> None:
        self.kubernetes = cfg.kubernetes
        if cfg.kubernetes:
            # Imported here: file mode never loads the Kubernetes client.
            from control.sources.kubernetes import KubernetesSource

            source = KubernetesSource.from_config(cfg)
        else:
            if not cfg.config:
                raise ConfigError("FLUXGATE_CONFIG (--config) or FLUXGATE_KUBERNETES (--kubernetes) "
                                  "is required")
            if not os.path.exists(cfg.config):
                raise ConfigError(f"FLUXGATE_CONFIG={cfg.config!r}: no such file or directory")
            source = FileSource(cfg.config)
        self.cfg = cfg
        self.source = source
        # Kept from one rebuild to the next (the build thread's): a change costs its own size.
        self.compile_memo = CompileMemo()
        self.warming = Warming()  # Kubernetes mode: new routes wait for their endpoints
        self._holding = False
        self.writer = RingWriter(
            cfg.shard_name, slots=cfg.ring_slots, schema=SCHEMA_VERSION,
            hung_after=cfg.heartbeat_timeout,
        )
        try:  # workers' counters (shm/metrics.py): one region per seat (two per worker slot)
            self.metrics = metrics.Segment(cfg.shard_name, cfg.seat_count, create=True)
        except BaseException:
            self.writer.close(unlink=True)
            raise
        self.publisher = Publisher(self.writer)
        # The listening sockets: bound here, handed to the workers (sockets.py says why).
        self.sockets = Sockets(cfg.worker_count, cfg.bind_address)
        self._listeners: tuple = ()  # (name, address, port) of the published table
        self.supervisor = Supervisor(cfg, self.writer, self.sockets, self.metrics)
        # Tracing: the workers' sampled spans are exported from here (control/tracing.py).
        self.spans = SpanExport.open(cfg)
        self.supervisor.spans = self.spans.receive if self.spans is not None else None
        self.integrity_errors = 0  # damaged table bytes the workers found (republished each time)
        self.admin = Admin(self, cfg.admin_address, cfg.admin_port, debug_token=cfg.debug_token)
        # From the first change the loop saw to the workers being told (hold-off,
        # warming and the rebuild itself): what an operator tunes the hold-off by.
        self.rebuild_seconds = Histogram(
            "fluxgate_rebuild_seconds", "From a source change to the new table published",
            registry=None, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.admin.registry.register(self.rebuild_seconds)
        self.held_for_endpoints = 0
        self.last_build: dict = {}  # the last rebuild's numbers, for /debug/status
        # Kubernetes events are whole objects: a lone one is published at once.
        self.pipeline = Pipeline(
            source, Holdoff(cfg.holdoff_ms, cfg.holdoff_max_ms, leading=cfg.kubernetes),
            # Kubernetes mode requires GatewayClass/IngressClass objects (controllerName
            # checked); file mode serves FLUXGATE_GATEWAY_CLASS without one.
            translate_options={"default_class": None if cfg.kubernetes else cfg.gateway_class,
                               "ingress_http_port": cfg.ingress_http_port,
                               "gateways": cfg.gateways or None},
            finish=self._compile, hold=self._hold_cold_routes if cfg.kubernetes else None,
            on_built=self._publish, on_reset=self._reset, on_idle=lambda: self._wake.set())
        self._reload = False
        self._child = False  # SIGCHLD came: tick now
        self._stop = asyncio.Event()
        self._closing_until: float | None = None  # SIGTERM came: stop at this time (shutdown delay)
        self._wake = asyncio.Event()  # set by the source (any thread, via the loop) and by stop
        self.exit_code = 0

    @property
    def status(self):
        return self.pipeline.status

    # --- life cycle ---------------------------------------------------------------

    async def run(self) -> int:
        tune_process()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        # A worker died (its pidfd is readable): reap and replace it now, not at
        # the next tick. (uvloop keeps SIGCHLD for itself.)
        self.supervisor.watch = lambda fd, on: (
            loop.add_reader(fd, self._child_exited) if on else loop.remove_reader(fd))
        self.supervisor.read = lambda fd, callback: (
            loop.add_reader(fd, callback) if callback is not None else loop.remove_reader(fd))
        try:
            # Admin first, so /readyz can say what the first table waits for.
            if not await self._start_admin():
                return self.exit_code
            self.source.start(lambda: loop.call_soon_threadsafe(self._wake.set))
            if self.kubernetes and not await self._initial_sync():
                return self.exit_code
            while self.writer.generation == 0:
                if self._stop.is_set():
                    return self.exit_code
                if not await self._first_build():
                    return self.exit_code
            self.supervisor.start_all()
            log.info("gateway started", extra={"fields": {
                "shard": self.cfg.shard_name, "workers": self.cfg.worker_count,
                "source": self._source_name, "admin": f"{self.cfg.admin_address}:{self.cfg.admin_port}"}})
            await self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    async def _first_build(self) -> bool:
        """Build the first table (again after a busy ring or a hold); False if stopped."""
        due = self.pipeline.due()
        if due is not None and due > time.monotonic():
            await self._sleep(due - time.monotonic())
        build = asyncio.ensure_future(self.pipeline.build_now())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({build, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if self._stop.is_set():
            build.cancel()
            return False
        if self.writer.generation == 0 and build.result().failed is not None:
            await self._sleep(1.0)  # a bug: logged; do not spin
        return True

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), max(0.0, seconds))
        except asyncio.TimeoutError:
            pass

    @property
    def _source_name(self) -> str:
        return f"kubernetes {self.source.host}" if self.kubernetes else self.cfg.config

    async def _start_admin(self) -> bool:
        try:
            await self.admin.start()
        except OSError as exc:
            log.error("cannot start the admin server", extra={"fields": {
                "address": f"{self.cfg.admin_address}:{self.cfg.admin_port}", "error": str(exc)}})
            self.exit_code = EXIT_CONFIG
            return False
        return True

    async def _initial_sync(self) -> bool:
        """Wait until every watch has listed once; False if stopped meanwhile."""
        while not self.source.synced:
            if self._stop.is_set():
                return False
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        return not self._stop.is_set()

    async def _loop(self) -> None:
        next_tick = next_watch = next_beat = 0.0
        woken = False
        pipeline = self.pipeline
        while not self._stop.is_set():
            now = time.monotonic()
            if self._closing_until is not None and now >= self._closing_until:
                return
            if now >= next_watch or self._reload or woken:
                next_watch = now + self.cfg.watch_interval
                forced, self._reload = self._reload, False
                if forced:
                    log.info("SIGHUP: reloading the configuration")
                pipeline.poll(now, forced)
            due = pipeline.due()
            if due is not None and now >= due:
                pipeline.start()
            if now >= next_tick or self._child:
                next_tick, self._child = now + TICK, False
                self._check_integrity()
                if self.sockets.failed:
                    self._sync_sockets(self._listeners)
                self.supervisor.tick()
                if self.supervisor.fatal:
                    log.error("stopping: " + self.supervisor.fatal)
                    self.exit_code = 1
                    return
            if now >= next_beat:
                next_beat = now + 1.0
                self.writer.heartbeat()
            wake = min(next_tick, next_watch, next_beat, self._closing_until or next_beat)
            due = pipeline.due()
            if due is not None:
                wake = min(wake, due)
            # Cleared before the next fingerprint read: an event after it wakes us again.
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake - time.monotonic()))
                woken = True
            except asyncio.TimeoutError:
                woken = False
            self._wake.clear()

    def _shutdown(self) -> None:
        log.info("stopping: draining workers", extra={"fields": {"deadline_s": self.cfg.drain_seconds}})
        self.pipeline.close()
        self.admin.close()
        self.source.close()
        # Workers get the drain time; SIGKILL one second after it.
        self.supervisor.stop(time.monotonic() + self.cfg.drain_seconds + 1.0)
        if self.spans is not None:  # the workers' last spans came in at their reap
            self.spans.close()
        self.writer.close(unlink=True)
        self.metrics.close(unlink=True)
        log.info("stopped")

    def _request_stop(self) -> None:
        """SIGTERM/SIGINT: /readyz fails at once, the workers close every
        connection after its response and keep accepting for
        FLUXGATE_SHUTDOWN_DELAY_SECONDS (endpoints are removed meanwhile), then
        the drain. A second signal, or no workers yet, stops at once."""
        delay = self.cfg.shutdown_delay_seconds
        if self._closing_until is None and delay > 0 and self.writer.generation:
            self._closing_until = time.monotonic() + delay
            self.supervisor.closing()
            log.info("shutting down: /readyz fails, listeners stay open meanwhile", extra={"fields": {
                "delay_s": delay, "then_drain_s": self.cfg.drain_seconds}})
        else:
            self._stop.set()
        self._wake.set()

    def _child_exited(self) -> None:
        self._child = True
        self._wake.set()

    def _sync_sockets(self, listeners: tuple) -> None:
        """Bind what the table to be published listens on, before the workers are told."""
        self._listeners = listeners
        if self.sockets.sync(listeners):
            self.supervisor.sockets_changed()

    def _check_integrity(self) -> None:
        """A worker found bytes of the table damaged in shared memory (it serves
        503 for them): publish the same table again, from this process's own
        copy (the pipeline's memo and the encoder's blobs, never from shm)."""
        found = self.supervisor.integrity_reports()
        if not found:
            return
        self.integrity_errors += found
        log.error("table integrity: a worker found damaged table bytes; publishing the table again",
                  extra={"fields": {"generation": self.writer.generation, "reports": found,
                                    "total": self.integrity_errors}})
        self.pipeline.retry(time.monotonic())

    def _request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    # --- the pipeline's stages that are the runner's ------------------------------------

    def _compile(self, translation):
        """Build thread: compile, encode and stage in a free ring slot (the
        loop only makes it current: a copy of a large table would stall it)."""
        t0 = time.perf_counter()
        table = compile_table(translation.ir, source="kubernetes" if self.kubernetes else self.cfg.config,
                              memo=self.compile_memo)
        t1 = time.perf_counter()
        out = {"compile_ms": round((t1 - t0) * 1000, 1),
               "listeners": tuple((lst.name, lst.address, lst.port) for lst in table.listeners)}
        try:
            out["encoded"] = encoded = self.publisher.prepare(table)
        except RingBusy as exc:  # retried by _publish, like a busy write
            out["busy"] = exc
            return out
        out["encode_ms"] = round((encoded.seconds + encoded.stage_seconds) * 1000, 1)
        return out

    def _publish(self, build: Build) -> bool:
        """Loop: make the built table current and tell the workers; False if
        the ring is busy (the pipeline builds and publishes again shortly)."""
        t0 = time.perf_counter()
        # The sockets go before the table that needs them (a worker may see it by polling).
        self._sync_sockets(build.output["listeners"])
        try:
            busy = build.output.get("busy")
            if busy is not None:
                raise busy
            generation = self.publisher.write(build.output["encoded"])
        except RingBusy as exc:
            log.warning("ring busy; will publish again shortly", extra={"fields": {"error": str(exc)}})
            self.pipeline.retry(time.monotonic() + 0.05)
            return False
        write_ms = round((time.perf_counter() - t0) * 1000, 1)
        self.warming.published(self.pipeline.memo.routes, build.translation.ir.clusters)
        self._holding = False
        if build.waited:
            self.rebuild_seconds.observe(build.waited)
        self.supervisor.notify()  # first: workers swap while the rest is logged
        routes, compiled = self.pipeline.memo.routes, self.compile_memo
        self.last_build = {
            "generation": generation,
            "waited_ms": round(build.waited * 1000, 1),  # first change → notify, hold-off included
            **build.timings, "compile_ms": build.output["compile_ms"],
            "publish_ms": round(build.output["encode_ms"] + write_ms, 1),
            "routes_reused": routes.reused, "routes_translated": routes.computed,
            "routes_compiled": compiled.compiled}
        log.info("rebuilt", extra={"fields": dict(self.last_build)})
        return True

    def _reset(self) -> None:
        self.compile_memo, self.warming = CompileMemo(), Warming()

    def _hold_cold_routes(self, translation, may_wait: bool) -> bool:
        """Build thread: True if new routes wait for their endpoints (warming.py) and may still."""
        cold = self.warming.cold(self.pipeline.memo.routes, translation.ir.clusters)
        if not cold or not may_wait:
            return False
        if not self._holding:  # once per hold, not once per re-check
            self._holding = True
            self.held_for_endpoints += 1
            log.info("holding new routes until their backends have endpoints", extra={"fields": {
                "routes": cold[:5], "count": len(cold), "at_most_ms": self.cfg.holdoff_max_ms}})
        return True

    # --- what the admin server shows --------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if self._closing_until is not None:
            return False, "shutting down"
        if self.kubernetes and not self.source.synced:
            return False, self.source.waiting()
        if self.writer.generation == 0:
            return False, "building the first table"
        return self.supervisor.all_serving()

    def debug_config(self) -> dict:
        data = self.writer.current()
        table = codec.table_to_builtins(codec.decode_index(data)) if data else None
        return {
            "shard": self.cfg.shard_name,
            "control_pid": os.getpid(),
            "generation": self.writer.generation,
            "checksum": self.publisher.last_checksum,
            "bytes": len(data),
            "workers": self.supervisor.describe(),
            **({"watches": self.source.describe()} if self.kubernetes else {}),
            "table": table,
        }

    def debug_route(self, params: dict) -> dict:
        data = self.writer.current()
        if not data:
            raise ExplainError("no table published yet")
        return explain_request(codec.decode_index(data), params)

    def debug_status(self) -> dict:
        report = self.status.to_builtins() if self.status is not None else {"objects": [], "notes": []}
        return {"generation": self.writer.generation,
                "config_errors": [str(p) for p in self.pipeline.problems()],
                "last_rebuild": self.last_build, **report}
