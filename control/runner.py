"""The control process of one shard: source → cache → translate → compile → publish.

One asyncio loop does everything, so nothing here needs a lock:
* the source is a FileSource (``--config``) or a KubernetesSource
  (``--kubernetes``); either way the loop compares its ``fingerprint()`` every
  FLUXGATE_WATCH_INTERVAL, and the Kubernetes source also wakes the loop the
  moment a watch event changes it (``call_soon_threadsafe`` from its watch
  threads), so a publish follows an event by the hold-off, not by a poll;
* a change arms the hold-off (control/holdoff.py: FLUXGATE_HOLDOFF_MS after
  the latest change, never more than FLUXGATE_HOLDOFF_MAX_MS after the first;
  in Kubernetes mode a change after a quiet period is acted on at once); when
  it ends the source is read into the cache once, and only if the cache says
  something that matters changed is a table built and published: a burst is
  one load and one publish (two in Kubernetes mode: its first event, then
  the rest);
* signal handlers only set what the loop acts on (reload, stop);
* the supervisor ticks every 0.5 s; the ring writer heart-beats every second.

A rebuild that fails (a bug in translation, a ring that stays busy) is logged
and retried; the table that is live keeps serving. The first table is
published before any worker starts, so a worker is never up without one. In
Kubernetes mode the first table waits for every watch's initial list (never a
half-listed world): meanwhile the admin server is up and /readyz says what
the gateway waits for, and the source retries with back-off.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time

from prometheus_client import Histogram

from control.servers.admin import Admin
from control.cache import ObjectCache
from control.compile import CompileMemo, compile_table
from control.config import Config, ConfigError
from control.explain import ExplainError, explain_request
from control.holdoff import Holdoff
from control.publish import Publisher
from control.sources.files import FileSource
from control.supervisor import Supervisor
from control.translate import Memo, translate
from control.warming import Warming
from shm import codec
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
        self.cache = ObjectCache()
        # Kept from one rebuild to the next: a change costs its own size.
        self.translate_memo = Memo()
        self.compile_memo = CompileMemo()
        self.warming = Warming()  # Kubernetes mode: new routes wait for their endpoints
        self._holding = False
        self.writer = RingWriter(
            cfg.shard_name, slots=cfg.ring_slots, schema=SCHEMA_VERSION,
            hung_after=cfg.heartbeat_timeout,
        )
        self.publisher = Publisher(self.writer)
        self.supervisor = Supervisor(cfg, self.writer)
        self.admin = Admin(self, cfg.admin_address, cfg.admin_port)
        # From the first change the loop saw to the workers being told (hold-off,
        # warming and the rebuild itself): what an operator tunes the hold-off by.
        self.rebuild_seconds = Histogram(
            "fluxgate_rebuild_seconds", "From a source change to the new table published",
            registry=None, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.admin.registry.register(self.rebuild_seconds)
        self.held_for_endpoints = 0
        self.status = None
        self.config_errors = 0
        self._fingerprint = None
        # Kubernetes events are whole objects: a lone one is published at once.
        self.holdoff = Holdoff(cfg.holdoff_ms, cfg.holdoff_max_ms, leading=cfg.kubernetes)
        self._stale = False  # the cache holds changes no published table has
        self._forced = False  # SIGHUP: rebuild even if nothing changed
        self._reload = False
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # set by the source (any thread, via the loop) and by stop
        self.exit_code = 0

    # --- life cycle ---------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        try:
            if self.kubernetes:
                # Admin first, so /readyz can say what the first table waits for.
                if not await self._start_admin():
                    return self.exit_code
                self.source.start(lambda: loop.call_soon_threadsafe(self._wake.set))
                if not await self._initial_sync():
                    return self.exit_code
                self._load()
                self._rebuild()
                # The objects of the initial lists (raw and typed) live as long as
                # the process: out of the cyclic GC's sight, a full collection no
                # longer walks them during every later translation (measured at
                # 5000 routes: 40-60 ms less per change). Objects frozen here are
                # still freed by reference counting when replaced.
                gc.collect()
                gc.freeze()
            else:
                self._load()
                self._rebuild()
                if not await self._start_admin():
                    return self.exit_code
            self.supervisor.start_all()
            log.info("gateway started", extra={"fields": {
                "shard": self.cfg.shard_name, "workers": self.cfg.worker_count,
                "source": self._source_name, "admin": f"{self.cfg.admin_address}:{self.cfg.admin_port}"}})
            await self._loop()
        finally:
            self._shutdown()
        return self.exit_code

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
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_watch or self._reload or woken:
                next_watch = now + self.cfg.watch_interval
                self._watch()
            due = self.holdoff.due()
            if due is not None and now >= due:
                self._publish()
            if now >= next_tick:
                next_tick = now + TICK
                self.supervisor.tick()
                if self.supervisor.fatal:
                    log.error("stopping: " + self.supervisor.fatal)
                    self.exit_code = 1
                    return
            if now >= next_beat:
                next_beat = now + 1.0
                self.writer.heartbeat()
            wake = min(next_tick, next_watch, next_beat)
            due = self.holdoff.due()
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
        self.admin.close()
        if self.kubernetes:
            self.source.close()
        # Workers get the drain time; SIGKILL one second after it.
        self.supervisor.stop(time.monotonic() + self.cfg.drain_seconds + 1.0)
        self.writer.close(unlink=True)
        log.info("stopped")

    def _request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    # --- source → table --------------------------------------------------------------

    def _watch(self) -> None:
        """Arm the hold-off when the source changed. The source is read into the
        cache once, when the hold-off ends (``_publish``), however many events
        came meanwhile: a burst costs one load."""
        forced, self._reload = self._reload, False
        fp = self.source.fingerprint()
        if fp == self._fingerprint and not forced:
            return
        if forced:
            log.info("SIGHUP: reloading the configuration")
            self._forced = True
        self._fingerprint = fp
        self.holdoff.changed(time.monotonic())

    def _publish(self) -> None:
        """The hold-off is over: load, and rebuild if anything that matters changed."""
        forced, self._forced = self._forced, False
        if self._load() or forced:
            self._stale = True
        if self._stale:
            self._rebuild()
        else:  # e.g. only a status or an unread annotation changed
            self.holdoff.handled(time.monotonic())

    def _load(self) -> bool:
        """Read the source into the cache; True if anything that matters changed."""
        self._fingerprint = self.source.fingerprint()
        if self.kubernetes:
            # Only what changed since the last load is parsed (not every object).
            changes = self.source.changes()
            changed = self.cache.apply_changes(changes.upserts, changes.deletes)
        else:
            changed = self.cache.apply(self.source.load())
        for err in self.cache.errors:
            self.config_errors += 1
            log.error("config rejected; keeping the last good version", extra={"fields": {
                "error": str(err)}})
        for warn in self.cache.warnings:
            log.warning("config ignored", extra={"fields": {"warning": str(warn)}})
        return changed

    def _rebuild(self) -> None:
        t0 = time.perf_counter()
        try:
            # Kubernetes mode requires GatewayClass/IngressClass objects (controllerName
            # checked); file mode serves FLUXGATE_GATEWAY_CLASS without one.
            result = translate(self.cache.objects(),
                               default_class=None if self.kubernetes else self.cfg.gateway_class,
                               ingress_http_port=self.cfg.ingress_http_port,
                               gateways=self.cfg.gateways or None, memo=self.translate_memo)
            t1 = time.perf_counter()
            if self.kubernetes and self._hold_cold_routes(result):
                return
            table = compile_table(result.ir, source="kubernetes" if self.kubernetes else self.cfg.config,
                                  memo=self.compile_memo)
            t2 = time.perf_counter()
            generation = self.publisher.publish(table)
        except RingBusy as exc:
            log.warning("ring busy; will publish again shortly", extra={"fields": {"error": str(exc)}})
            self.holdoff.retry(time.monotonic() + 0.05)
            return
        except Exception:
            # A bug must not take down the gateway: the live table keeps serving.
            log.exception("rebuild failed; the live table keeps serving")
            # Trust nothing half-done.
            self.translate_memo, self.compile_memo, self.warming = Memo(), CompileMemo(), Warming()
            self.holdoff.handled(time.monotonic())
            self._stale = False
            return
        t3 = time.perf_counter()
        self.warming.published(self.translate_memo.routes, result.ir.clusters)
        self._holding = False
        waited = self.holdoff.waited(time.monotonic())
        if waited:
            self.rebuild_seconds.observe(waited)
        self.holdoff.handled(time.monotonic())
        self._stale = False
        self.supervisor.notify()  # first: workers swap while the rest is logged
        routes, compiled = self.translate_memo.routes, self.compile_memo
        log.info("rebuilt", extra={"fields": {
            "generation": generation,
            "waited_ms": round(waited * 1000, 1),  # first change → notify, hold-off included
            "translate_ms": round((t1 - t0) * 1000, 1), "compile_ms": round((t2 - t1) * 1000, 1),
            "publish_ms": round((t3 - t2) * 1000, 1),
            "routes_reused": routes.reused, "routes_translated": routes.computed,
            "routes_compiled": compiled.compiled}})
        self._log_status(result.status)

    def _hold_cold_routes(self, result) -> bool:
        """True if new routes wait for their endpoints (warming.py) and may still."""
        now = time.monotonic()
        cold = self.warming.cold(self.translate_memo.routes, result.ir.clusters)
        if not cold or not self.holdoff.can_wait(now):
            return False
        self.holdoff.wait_more(now)
        if not self._holding:  # once per hold, not once per re-check
            self._holding = True
            self.held_for_endpoints += 1
            log.info("holding new routes until their backends have endpoints", extra={"fields": {
                "routes": cold[:5], "count": len(cold), "at_most_ms": self.cfg.holdoff_max_ms}})
        return True

    def _log_status(self, status) -> None:
        old, self.status = self.status, status
        for line, failing in status.judged_changes_since(old):
            # A rejection (a failing condition) is a warning: it is configuration not served.
            (log.warning if failing else log.info)("status: " + line)

    # --- what the admin server shows --------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if self.kubernetes and not self.source.synced:
            return False, self.source.waiting()
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
        return {"generation": self.writer.generation, **report}
