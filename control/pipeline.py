"""The control pipeline: source → cache → hold-off → translate → (compile) → hand-off.

One pipeline serves both commands: ``fluxgate run`` (runner.py; its ``finish``
compiles and encodes the table, its hand-off writes the ring and tells the
workers) and ``fluxgate controller`` (controller.py; no ``finish``, the hand-off
is the status writer). Either source (files, Kubernetes) hands it the same
``Changes`` (control/sources/events.py), applied to the cache the same way, so
translation reuses every object that did not change.

Rules (what must stay true):

* The schedule lives on the asyncio loop: ``poll`` compares the source's
  ``fingerprint()`` and arms the hold-off (control/holdoff.py); ``due()`` says
  when to ``start`` a build. One build at a time.
* A build runs in its own thread, never on the loop: it reads the source's
  ``changes()`` into the cache, translates, and runs ``finish`` (compile,
  encode). So the admin server (/healthz, /readyz, /debug/*), the supervisor's
  tick and signal handling answer while a 100k-route table is built. Only the
  build thread touches the cache, the translate memo and whatever ``finish``
  keeps (compile memo, encoder) while a build runs; the loop only reads the
  finished ``Build``, handed over whole (``call_soon_threadsafe``), and swaps
  what /debug/status shows in one assignment: no page sees half a build.
* Changes that come while a build runs arm the hold-off for the next build
  (``Holdoff.take``); none is lost. Stop never waits for a build: the thread
  is a daemon and its result is dropped once the loop is gone.
* A build that raises (a bug) is logged; the live table keeps serving and
  every memo is dropped (trust nothing half-done). A build that must wait
  (``hold``: new routes wait for their endpoints) or whose hand-off is busy
  (``retry``) runs again, even when nothing new changed.
* GC (``_prepare_gc``, ``_settle_gc``): what is alive when a build starts
  is frozen and the collector is off while the build runs; after the
  hand-off one collection walks what the build made, and the survivors are
  frozen. The switch interval is 1 ms (``tune_process``).
* Large structures are freed piecewise, never in one C call (``_release``:
  the source's documents, after the hand-off).
* Only what an edit needs before it is served runs before the hand-off: the
  collection waits until the loop has handed the build off, and the next build waits for it (``_running`` stays set: two
  threads must not switch the collector); the status lines (a comparison
  with the last report, about 80 ms at 100k objects) are made and logged by
  their own thread.
* Problems with the input are warnings, never a stop: each is logged once
  when found and counted (``config_errors`` by kind and reason, for
  ``fluxgate_config_errors_total``); what fails now (a file keeping its last
  good version, an object whose latest version is rejected) is in
  ``problems()`` for /debug/status.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from control.cache import ObjectCache
from control.objects.raw import LoadError
from control.status import StatusReport
from control.translate import Memo, Translation, translate

log = logging.getLogger("fluxgate.pipeline")


@dataclass
class Build:
    """What one build did; handed from the build thread to the loop whole."""

    changed: bool = False  # something that matters changed (or the build was forced)
    translation: Translation | None = None
    output: Any = None  # what ``finish`` made (the runner: the encoded table)
    held: bool = False  # ``hold`` said wait: nothing to hand off yet
    failed: BaseException | None = None
    errors: list[LoadError] = field(default_factory=list)
    warnings: list[LoadError] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage
    waited: float = 0.0  # seconds from the first change to the hand-off (set on the loop)


class Pipeline:
    def __init__(self, source, holdoff, *, translate_options: dict,
                 on_built: Callable[[Build], None],
                 finish: Callable[[Translation], Any] | None = None,
                 hold: Callable[[Translation, bool], bool] | None = None,
                 on_reset: Callable[[], None] | None = None,
                 on_idle: Callable[[], None] = lambda: None,
                 failure: str = "rebuild failed; the live table keeps serving") -> None:
        """``on_built`` (loop): hand off a build that changed something (returns
        False if it could not, having called ``retry``: status stays as it was).
        ``finish`` (build thread): the work after translation. ``hold`` (build
        thread): True to wait longer; its second argument says whether the
        hold-off still may. ``on_reset`` (loop): drop the caller's memos after a
        failed build. ``on_idle`` (loop): a build finished; recompute the schedule.
        ``failure``: what the log says when a build raises."""
        self.source = source
        self.holdoff = holdoff
        self.translate_options = translate_options
        self.on_built, self.finish, self.hold = on_built, finish, hold
        self.on_reset, self.on_idle = on_reset, on_idle
        self.failure = failure
        self.cache = ObjectCache()
        self.memo = Memo()  # kept from one build to the next: a change costs its own size
        self.status: StatusReport | None = None  # of the last build handed off
        self.builds = 0
        self.config_errors: Counter[tuple[str, str]] = Counter()  # (kind, reason) → count
        self._fingerprint: Any = None
        self._forced = False  # SIGHUP: rebuild even if nothing changed
        self._force_next = False  # SIGHUP during a build: for the first poll after it
        self._stale = True  # the cache holds what no hand-off has (first build: always)
        self._running = False
        self._froze = False
        self._closed = False
        self._last: Build | None = None
        self._garbage: list = []  # the build thread's: what the source handed it, to free

    @property
    def running(self) -> bool:
        return self._running

    # --- the schedule (loop) ------------------------------------------------------------

    def poll(self, now: float, forced: bool = False) -> None:
        """Arm the hold-off when the source changed (or ``forced``: SIGHUP).

        Not while a build runs: a file source's fingerprint is a stat per file,
        each giving up the GIL to the build thread and waiting to get it back,
        so the loop would stall; the first poll after the build (``on_idle``
        wakes the loop) sees any change made meanwhile."""
        if self._running:
            self._force_next = self._force_next or forced
            return
        forced, self._force_next = forced or self._force_next, False
        fp = self.source.fingerprint()
        if fp == self._fingerprint and not forced:
            return
        self._forced = self._forced or forced
        self._fingerprint = fp
        self.holdoff.changed(now)

    def due(self) -> float | None:
        """When to start the next build (None: nothing waits, or one runs)."""
        if self._running or not self.source.synced:
            return None
        return self.holdoff.due()

    def retry(self, at: float) -> None:
        """The hand-off could not finish for a passing reason (a busy ring):
        build and hand off again at ``at``."""
        self._stale = True
        self.holdoff.retry(at)

    def start(self) -> None:
        """Start a build in its thread; ``on_built`` follows on the loop."""
        assert not self._running
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = self.holdoff.pending
        first = self.holdoff.take(now)
        may_wait = pending and now < first + self.holdoff.max_delay
        force, self._forced = self._forced or self._stale, False
        self._fingerprint = self.source.fingerprint()  # what this build will read, or newer
        self._running = True

        def work() -> None:
            collecting = self._prepare_gc()
            handed = threading.Event()
            try:
                build = self._stages(force, may_wait)
                loop.call_soon_threadsafe(self._finished, build, first, handed)
                handed.wait(HAND_OFF_WAIT)  # the edit is served first; then the collector
            except RuntimeError:  # the loop is gone (stopping): drop it
                return
            finally:
                _release(self._garbage)
                if collecting:
                    self._settle_gc()
            try:
                loop.call_soon_threadsafe(self._idle)
            except RuntimeError:
                pass

        threading.Thread(target=work, name="fluxgate-build", daemon=True).start()

    async def build_now(self) -> Build:
        """Build at once (the first table) and wait for the hand-off."""
        done = asyncio.get_running_loop().create_future()
        idle, self.on_idle = self.on_idle, lambda: done.done() or done.set_result(None)
        try:
            self.start()
            await done
        finally:
            self.on_idle = idle
        return self._last

    def problems(self) -> list[LoadError]:
        """What fails now: files keeping their last good version, rejected objects."""
        source = getattr(self.source, "problems", None)
        return (source() if source else []) + self.cache.rejected()

    # --- one build (its thread) -------------------------------------------------------------

    def _stages(self, force: bool, may_wait: bool) -> Build:
        build = Build()
        try:
            t0 = time.perf_counter()
            changes = self.source.changes()
            build.changed = self.cache.apply_changes(changes.upserts, changes.deletes) or force
            build.errors = list(changes.errors) + list(self.cache.errors)
            # Freed after the hand-off, one at a time (``_release``).
            self._garbage = [*changes.upserts, *changes.deletes]
            changes = None
            build.warnings = list(self.cache.warnings)
            t1 = time.perf_counter()
            build.timings["load_ms"] = _ms(t1 - t0)
            if not build.changed:
                return build
            build.translation = translate(self.cache.objects(), memo=self.memo, **self.translate_options)
            t2 = time.perf_counter()
            build.timings["translate_ms"] = _ms(t2 - t1)
            if self.hold is not None and self.hold(build.translation, may_wait):
                build.held = True
                return build
            if self.finish is not None:
                build.output = self.finish(build.translation)
        except Exception as exc:
            build.failed = exc
        return build

    # --- back on the loop -------------------------------------------------------------------

    def close(self) -> None:
        """Stopping: a build still running is dropped when it ends, never handed
        off; the status lines of the last hand-off are logged first (within 2 s)."""
        self._closed = True
        _status_log.flush(2.0)

    def _finished(self, build: Build, first: float, handed: threading.Event) -> None:
        """The build is done: hand it off (``on_built``). The build thread waits
        for ``handed``, then settles the collector and calls ``_idle``."""
        if self._closed:
            handed.set()
            return
        self._last = build
        try:
            self._report(build)
            if build.failed is not None:
                log.error(self.failure,
                          exc_info=(type(build.failed), build.failed, build.failed.__traceback__))
                self.memo = Memo()  # trust nothing half-done
                if self.on_reset is not None:
                    self.on_reset()
                self._stale = False
            elif build.held:
                self.holdoff.give_back(first, time.monotonic())
                self._stale = True
            elif build.changed:
                self._stale = False
                self.builds += 1
                build.waited = time.monotonic() - first
                if self.on_built(build) is not False:  # False: not handed off, retried
                    previous, self.status = self.status, build.translation.status
                    _status_log.compare(self.status, previous)
            else:  # e.g. only a status or an unread annotation changed
                self._stale = False
        finally:
            handed.set()

    def _idle(self) -> None:
        """The build thread is done (its collector settled): the next may start."""
        self._running = False
        if not self._closed:
            self.on_idle()

    def _report(self, build: Build) -> None:
        for err in build.errors:
            self.config_errors[error_labels(err)] += 1
            log.warning("config rejected; keeping the last good version", extra={"fields": {
                "error": str(err)}})
        for warn in build.warnings:
            log.warning("config ignored", extra={"fields": {"warning": str(warn)}})

    def _prepare_gc(self) -> bool:
        """Before a build (see ``_settle_gc``); returns whether the collector
        was on, i.e. whether ``_settle_gc`` must run after the build."""
        collecting = gc.isenabled()
        if self._froze and collecting:
            gc.collect(1)  # the loop's garbage since the last build: small
            gc.freeze()
        gc.disable()
        return collecting

    def _settle_gc(self) -> None:
        """After a build's hand-off: what the build made collected once, everything alive frozen.

        Frozen objects are out of the collector's sight for good (still freed
        by reference counting when replaced), so a collection walks only what
        was made since the last freeze. With the collector on during a build,
        each of its full collections walked everything the build had made so
        far (about 50 ms of GIL each at 100k routes, several per edit, /healthz
        over 100 ms) and found nothing: an edit makes no cyclic garbage. So the
        collector is off while a build runs (the first build too: every object
        is new), and this one collection walks the build's objects once, after
        the edit is served. That walk is short because a one-route edit makes
        few new containers (the compile memo and the encoder's cache are
        updated in place): measured at 100k routes, 23 ms. The first build's
        objects are frozen without a walk (seconds of GIL for nothing)."""
        if self._froze:
            gc.collect(1)
        self._froze = True
        gc.freeze()
        gc.enable()


MAX_STATUS_LINES = 1000
HAND_OFF_WAIT = 10.0  # seconds a build thread waits for the loop's hand-off before settling the GC


def _fewer(lines: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """At most ``MAX_STATUS_LINES`` status lines per build: past that (the first
    table of a large configuration: one line per object, 100k lines of
    "Accepted=True" cost seconds of CPU and say nothing), the failing ones and
    a count; /debug/status has every object."""
    if len(lines) <= MAX_STATUS_LINES:
        return lines
    failing = [pair for pair in lines if pair[1]]
    shown = failing[:MAX_STATUS_LINES]
    more = len(lines) - len(shown)
    return shown + [(f"{more} more lines ({len(failing) - len(shown)} failing) not logged: "
                     "see /debug/status", False)]


class _StatusLog:
    """Status lines are logged by one thread of their own, in order: the first
    table's are one per object (100k lines took the loop 2 s)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[tuple[str, bool]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def compare(self, report: StatusReport, previous: StatusReport | None) -> None:
        """Log what differs between two handed-off reports (statuses are not
        changed once a translation is done, so this thread may read them)."""
        self._queue.put((report, previous))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fluxgate-status-log",
                                                daemon=True)
                self._thread.start()

    def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every line put so far is logged."""
        if self._thread is not None:
            done = threading.Event()
            self._queue.put(done)
            done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            report, previous = item
            try:
                lines = _fewer(report.judged_changes_since(previous))
            except Exception:  # a bug here must not stop the logging of later builds
                log.exception("status lines could not be made")
                continue
            for line, failing in lines:
                # A rejection (a failing condition) is configuration not served.
                (log.warning if failing else log.info)("status: " + line)


_status_log = _StatusLog()


def _release(items: list) -> None:
    """Free a list's items one at a time, from the end. Dropping a large
    structure at once frees everything it alone holds in one C call, holding
    the GIL: the first build's 100k parsed documents took 194 ms (a /healthz
    stall). Between two items the loop may take the GIL."""
    while items:
        items.pop()


def tune_process() -> None:
    """Once per control process: a thread waiting for the GIL gets it within
    1 ms (CPython's default is 5 ms). While a build holds the GIL, each of the
    loop's system calls (accept, recv, send on an admin connection) gives it
    up and waits to get it back: at 5 ms a /healthz answer took tens of ms
    under a 100k-route build. An idle loop asks for nothing, so builds pay
    only while someone waits."""
    sys.setswitchinterval(0.001)


def error_labels(err: LoadError) -> tuple[str, str]:
    """(kind, reason) of a problem, for the config-error counter: kind is the
    object's ("" for a whole file or a document without identity); reason one
    of file (cannot be read or parsed), identity (a document that is not an
    object), invalid (rejected), duplicate."""
    kind = err.object.split(" ", 1)[0] if err.object else ""
    if not err.object:
        return kind, "identity" if err.document else "file"
    if err.reason.startswith("ignored: duplicate"):
        return kind, "duplicate"
    return kind, "invalid"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
