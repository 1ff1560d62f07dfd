"""The worker supervisor, in the manner of gunicorn's arbiter.

Words: a *slot* is one of the ``FLUXGATE_WORKERS`` places a worker serves
from; it owns one listening socket per listener (control/sockets.py). A
*seat* is a ring worker entry and a metrics region; slot k has seats k and
k + slots, so a recycled worker's successor can start beside it.

Rules:
* Signal handlers only enqueue (the runner's loop calls ``tick``); all
  reaping, killing and spawning happens in ``tick``, in this order:
  reap the dead → kill the hung → recycle the drifting → top up.
* A worker is started as ``python -m dataplane`` (never imported here) with
  its settings as JSON and its end of a channel (common/channel.py): its
  slot's listening sockets go first, then ``!`` for every publish, ``c`` when
  the pod shuts down; EOF means "the control process is gone". The worker
  sends its sampled spans back on it (``T``, to ``spans``: control/tracing.py),
  read on the runner's loop and, at the reap, to its end.
* A dead worker's slot keeps its sockets, so connections queued on them wait
  for the replacement, which is started at once when the dead one had served
  (killed from outside, crashed after a while). Only a crash loop is damped:
  a worker that dies before it served, or crashes young, is restarted after a
  back-off that doubles up to 30 s; exit code 3 (cannot boot) stops the
  gateway, since restarting cannot help.
* Drift: a worker that serves a table other than the published one (generation
  or checksum) for ``FLUXGATE_DRIFT_SECONDS`` is recycled, one worker at a time
  in the whole gateway: its successor starts in the slot's other seat, and only
  once it serves the published table is the old one drained. A successor that
  does not get there is killed and the slot waits (back-off); after
  ``DRIFT_TRIES`` failures the supervisor logs that it gives up on that worker.
* A seat's ring entry is cleared before a worker takes it and after it is
  reaped, so a dead worker never pins a ring slot and a recycled pid is never
  mistaken for it; its metrics gauges are cleared at the reap.
* Every stop has a deadline, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import msgspec

from common import channel
from control.config import Config
from control.sockets import Sockets
from shm.metrics import Segment
from shm.ring import RingWriter

log = logging.getLogger("fluxgate.supervisor")

EXIT_BOOT = 3  # dataplane.worker.EXIT_BOOT (not imported: control never imports dataplane)
YOUNG = 5.0  # a worker that crashes sooner than this after its start counts as crash-looping
MAX_BACKOFF = 30.0
DRIFT_TRIES = 5  # failed recycles of one drifting worker before giving up on it
# Signals that say "stopped from outside" (an operator, the OOM killer), not a crash.
_OUTSIDE = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP}


@dataclass
class WorkerProc:
    """One worker process."""

    slot: int
    seat: int
    proc: subprocess.Popen
    chan: socket.socket  # the control's end of its channel
    started: float
    pidfd: int = -1  # readable once the process has exited (the runner's loop watches it)
    served: bool = False  # has served a table (a death after this is not a crash loop)
    stopping: bool = False  # asked to drain (SIGTERM sent)
    stop_deadline: float = 0.0  # SIGKILL after this, once stopping
    why: str = ""  # the supervisor's reason for stopping it (a restart reason label), if any
    resend: bool = False  # its sockets message did not fit the channel: send again
    drift_since: float | None = None
    drift_tries: int = 0
    drift_not_before: float = 0.0
    drift_gave_up: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Slot:
    index: int
    worker: WorkerProc | None = None  # the one serving this slot
    successor: WorkerProc | None = None  # started to replace a drifting worker, not serving yet
    retiring: WorkerProc | None = None  # a replaced worker, draining
    restarts: int = 0
    backoff: float = 0.0
    not_before: float = 0.0  # earliest restart time
    last_exit: int | None = None

    def procs(self) -> list[WorkerProc]:
        return [w for w in (self.worker, self.successor, self.retiring) if w is not None]

    def free_seat(self, nslots: int) -> int:
        taken = {w.seat for w in self.procs()}
        return next(s for s in (self.index, self.index + nslots) if s not in taken)


class Supervisor:
    def __init__(self, cfg: Config, writer: RingWriter, sockets: Sockets, metrics: Segment | None = None) -> None:
        self.cfg = cfg
        self.writer = writer
        self.sockets = sockets
        self.metrics = metrics
        self.nslots = cfg.worker_count
        self.slots = [Slot(i) for i in range(self.nslots)]
        self.stopping = False
        self.shutting_down = False  # SIGTERM came: workers answer with Connection: close
        self.fatal: str | None = None  # set when the gateway must stop
        # Restarts by reason (fluxgate_worker_restarts_total{reason}): crashed
        # (non-zero exit), signal (killed from outside), exited (code 0 unasked),
        # hung, start_timeout, no_table (the supervisor's own).
        self.restart_reasons: Counter[str] = Counter()
        self.drift_recycles = 0  # fluxgate_drift_recycles_total
        self.recycling: int | None = None  # the slot being recycled (one at a time)
        self._integrity_seen: dict[tuple[int, int], int] = {}  # (seat, pid) -> integrity count seen
        # watch(pidfd, True/False): the runner's loop wakes when a worker exits.
        self.watch: Callable[[int, bool], None] | None = None
        # read(fd, callback or None): the runner's loop calls back when a channel is readable.
        self.read: Callable[[int, Callable[[], None] | None], None] | None = None
        self.spans: Callable[[bytes], None] | None = None  # a worker's T message (None: tracing off)

    def procs(self) -> list[WorkerProc]:
        return [w for slot in self.slots for w in slot.procs()]

    # --- starting ---------------------------------------------------------------

    def start_all(self) -> None:
        for slot in self.slots:
            slot.worker = self._spawn(slot)

    def closing(self) -> None:
        """The pod shuts down: every worker, and any started from now on, answers
        with ``Connection: close``."""
        self.shutting_down = True
        self.notify(channel.CLOSING)

    def _spawn(self, slot: Slot) -> WorkerProc | None:
        seat = slot.free_seat(self.nslots)
        self.writer.reset_worker(seat, 0)
        ours, theirs = channel.pair()
        settings = msgspec.json.encode(self.cfg.worker_settings(seat)).decode()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
        # Read by dataplane/__init__.py before any compiled module can be imported.
        env["FLUXGATE_NATIVE"] = "true" if self.cfg.native else "false"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dataplane", "--settings", settings,
                 "--channel-fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, close_fds=True,
            )
        except OSError as exc:
            ours.close()
            log.error("cannot start worker", extra={"fields": {"worker": slot.index, "error": str(exc)}})
            slot.not_before = time.monotonic() + max(1.0, slot.backoff)
            return None
        finally:
            theirs.close()
        w = WorkerProc(slot.index, seat, proc, ours, time.monotonic())
        if self.watch is not None:
            try:
                w.pidfd = os.pidfd_open(proc.pid)
                self.watch(w.pidfd, True)
            except OSError:
                w.pidfd = -1  # the tick reaps it all the same
        if self.read is not None and self.spans is not None:
            self.read(ours.fileno(), lambda: self._receive(w))
        self._send_sockets(w)
        if self.shutting_down:
            self._send(w, channel.CLOSING)
        log.info("worker started", extra={"fields": {"worker": slot.index, "seat": seat, "pid": proc.pid}})
        return w

    # --- hearing from workers -------------------------------------------------------

    def _receive(self, w: WorkerProc) -> None:
        """Every message the worker has sent (its spans), until none is waiting."""
        while True:
            got = channel.receive(w.chan)
            if got is None:
                return
            data, fds = got
            for fd in fds:  # a worker never sends descriptors
                os.close(fd)
            if not data:  # EOF: the worker is gone (the reap closes the channel)
                if self.read is not None:
                    self.read(w.chan.fileno(), None)
                return
            if data[:1] == channel.SPANS and self.spans is not None:
                self.spans(data)

    # --- telling workers ----------------------------------------------------------

    def _send(self, w: WorkerProc, what: bytes) -> None:
        try:
            w.chan.send(what)
        except BlockingIOError:
            pass  # the channel is full of wake-ups already: the worker polls the ring anyway
        except OSError:
            pass  # the worker is gone; the reaper will see it

    def _send_sockets(self, w: WorkerProc) -> None:
        try:
            channel.send_sockets(w.chan, self.sockets.for_slot(w.slot))
            w.resend = False
        except BlockingIOError:
            w.resend = True  # the next tick tries again
        except OSError:
            pass  # gone

    def notify(self, what: bytes = channel.TABLE) -> None:
        """Tell every worker: a new generation is in the ring (``!``), or the
        pod shuts down (``c``)."""
        for w in self.procs():
            if not (w.stopping and what == channel.TABLE):
                self._send(w, what)

    def sockets_changed(self) -> None:
        """The listening sockets changed (a listener added or removed): hand each
        running worker its slot's set before the table that needs it."""
        for w in self.procs():
            if not w.stopping:
                self._send_sockets(w)

    # --- the loop body --------------------------------------------------------------

    def tick(self) -> None:
        self._reap()
        now = time.monotonic()
        for w in self.procs():
            if w.stopping and now > w.stop_deadline:
                log.warning("worker did not drain in time; killing", extra={"fields": {
                    "worker": w.slot, "pid": w.pid}})
                self._signal(w, signal.SIGKILL)
                w.stop_deadline = float("inf")
        if self.stopping:
            return
        entries = {e.index: e for e in self.writer.workers()}
        current, checksum = self.writer.generation, self.writer.checksum
        for slot in self.slots:
            for w in (slot.worker, slot.successor):
                if w is None or w.stopping:
                    continue
                if w.resend:
                    self._send_sockets(w)
                e = entries.get(w.seat)
                age = now - w.started
                if e is None or e.pid != w.pid:
                    # Not yet registered in the ring: give it the start-up time.
                    if age > self.cfg.worker_start_timeout:
                        self._kill(slot, w, f"did not register within {self.cfg.worker_start_timeout:g}s",
                                   "start_timeout")
                    continue
                if e.generation:
                    w.served = True
                if now - e.heartbeat > self.cfg.heartbeat_timeout:
                    self._kill(slot, w, f"no heartbeat for {now - e.heartbeat:.1f}s (hung)", "hung")
                elif current and e.generation == 0 and age > self.cfg.worker_start_timeout:
                    self._kill(slot, w, f"serves no table {age:.0f}s after start", "no_table")
                elif w is slot.successor:
                    if e.generation == current and e.checksum == checksum:
                        self._promote(slot)
                elif current and (e.generation != current or e.checksum != checksum):
                    if w.drift_since is None:
                        w.drift_since = now
                    elif now - w.drift_since >= self.cfg.drift_seconds:
                        self._drifting(slot, w, e.generation, current, now)
                else:
                    w.drift_since = None
        if self.fatal is None:
            for slot in self.slots:
                if slot.worker is None and now >= slot.not_before:
                    slot.worker = self._spawn(slot)

    def _drifting(self, slot: Slot, w: WorkerProc, serves: int, current: int, now: float) -> None:
        if self.recycling is not None or w.drift_gave_up or now < w.drift_not_before:
            return
        log.warning("worker serves another table than the published one; recycling it", extra={"fields": {
            "worker": slot.index, "pid": w.pid, "generation": serves, "current": current,
            "for_s": round(now - w.drift_since, 1), "attempt": w.drift_tries + 1}})
        self.recycling = slot.index
        slot.successor = self._spawn(slot)
        if slot.successor is None:
            self._recycle_failed(slot, w)

    def _recycle_failed(self, slot: Slot, w: WorkerProc | None) -> None:
        self.recycling = None
        if w is None:
            return
        w.drift_tries += 1
        if w.drift_tries >= DRIFT_TRIES:
            w.drift_gave_up = True
            log.error("giving up recycling a drifting worker; it keeps serving its table", extra={"fields": {
                "worker": slot.index, "pid": w.pid, "tries": w.drift_tries}})
        else:
            w.drift_not_before = time.monotonic() + min(MAX_BACKOFF, 2.0 ** w.drift_tries)

    def _promote(self, slot: Slot) -> None:
        """The successor serves the published table: it takes the slot, the old one drains."""
        old, slot.worker, slot.successor = slot.worker, slot.successor, None
        self.drift_recycles += 1
        log.info("worker recycled: its successor serves; draining it", extra={"fields": {
            "worker": slot.index, "pid": old.pid if old else 0, "successor": slot.worker.pid}})
        if old is not None:
            slot.retiring = old
            self._terminate(old)
        else:
            self.recycling = None

    def _reap(self) -> None:
        for slot in self.slots:
            for w in slot.procs():
                rc = w.proc.poll()
                if rc is not None:
                    self._reaped(slot, w, rc)

    def _reaped(self, slot: Slot, w: WorkerProc, rc: int) -> None:
        if self.spans is not None:
            self._receive(w)  # what it sent before it exited (its last spans)
            if self.read is not None:
                self.read(w.chan.fileno(), None)
        w.chan.close()
        if w.pidfd >= 0:
            self.watch(w.pidfd, False)
            os.close(w.pidfd)
            w.pidfd = -1
        self.writer.reset_worker(w.seat, 0)
        if self.metrics is not None:
            self.metrics.region(w.seat).clear_gauges()
        lived = time.monotonic() - w.started
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"code {rc}"
        if w is slot.retiring:
            slot.retiring = None
            if self.recycling == slot.index:
                self.recycling = None
            log.info("recycled worker stopped", extra={"fields": {"worker": slot.index, "pid": w.pid, "exit": how}})
            return
        if w is slot.successor:
            slot.successor = None
            log.error("a drifting worker's successor died before it served", extra={"fields": {
                "worker": slot.index, "pid": w.pid, "exit": how}})
            self._recycle_failed(slot, slot.worker)
            return
        # The slot's own worker.
        slot.worker = None
        slot.last_exit = rc
        if self.stopping:
            return
        if rc == EXIT_BOOT:
            self.fatal = f"worker {slot.index} cannot boot (exit code {rc}); see its log"
            log.error("worker cannot boot; stopping", extra={"fields": {"worker": slot.index, "pid": w.pid}})
            return
        slot.restarts += 1
        reason = w.why or ("signal" if rc < 0 else "crashed" if rc else "exited")
        self.restart_reasons[reason] += 1
        outside = rc < 0 and -rc in _OUTSIDE
        if not w.served or (lived < YOUNG and not outside):
            slot.backoff = min(MAX_BACKOFF, max(1.0, slot.backoff * 2))
        else:
            slot.backoff = 0.0
        slot.not_before = time.monotonic() + slot.backoff
        if slot.successor is not None:  # a recycle was under way: the successor takes over
            slot.worker, slot.successor = slot.successor, None
            self.recycling = None
        level = logging.INFO if w.stopping else logging.ERROR
        log.log(level, "worker exited; restarting", extra={"fields": {
            "worker": slot.index, "pid": w.pid, "exit": how, "lived_s": round(lived, 2),
            "served": w.served, "restart_in_s": slot.backoff}})

    def _signal(self, w: WorkerProc, sig: int) -> None:
        try:
            w.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def _kill(self, slot: Slot, w: WorkerProc, why: str, reason: str) -> None:
        w.why = reason
        log.error("killing worker", extra={"fields": {"worker": slot.index, "pid": w.pid, "reason": why}})
        self._signal(w, signal.SIGKILL)

    def _terminate(self, w: WorkerProc) -> None:
        w.stopping = True
        w.stop_deadline = time.monotonic() + self.cfg.drain_seconds + 1.0
        self._signal(w, signal.SIGTERM)

    # --- stopping -------------------------------------------------------------------

    def stop(self, deadline: float) -> None:
        """Stop listening, SIGTERM every worker (they drain), SIGKILL what is left at ``deadline``."""
        self.stopping = True
        # First: from now on new connections are refused, not queued for nobody.
        self.sockets.close()
        for w in self.procs():
            if not w.stopping:
                self._terminate(w)
        while time.monotonic() < deadline and any(w.proc.poll() is None for w in self.procs()):
            time.sleep(0.02)
        for w in self.procs():
            if w.proc.poll() is None:
                log.warning("worker did not drain in time; killing", extra={"fields": {
                    "worker": w.slot, "pid": w.pid}})
                w.proc.kill()
                w.proc.wait()
        self._reap()

    # --- reporting --------------------------------------------------------------------

    def describe(self) -> list[dict]:
        entries = {e.index: e for e in self.writer.workers()}
        now = time.monotonic()
        out = []
        for slot in self.slots:
            w = slot.worker
            e = entries.get(w.seat) if w is not None else None
            live = e is not None and e.pid == w.pid
            out.append({
                "index": slot.index,
                "pid": w.pid if w is not None else 0,
                "seat": w.seat if w is not None else None,
                "generation": e.generation if live else 0,
                "checksum": e.checksum if live else 0,
                "heartbeat_age_s": round(now - e.heartbeat, 3) if live else None,
                "requests": e.requests if live else 0,
                "restarts": slot.restarts,
                "last_exit": slot.last_exit,
                "alive": w is not None and w.proc.poll() is None,
                "drifting_s": round(now - w.drift_since, 1) if w is not None and w.drift_since else 0,
                "successor": slot.successor.pid if slot.successor is not None else 0,
                "retiring": slot.retiring.pid if slot.retiring is not None else 0,
            })
        return out

    def integrity_reports(self) -> int:
        """Corruptions workers found in the table since the last call (each worker's
        ring entry counts its own; a new worker's count starts at 0)."""
        new, seen = 0, {}
        for e in self.writer.workers():
            key = (e.index, e.pid)
            before = self._integrity_seen.get(key, 0)
            new += max(0, e.integrity - before)
            seen[key] = max(before, e.integrity)
        self._integrity_seen = seen
        return new

    def all_serving(self) -> tuple[bool, str]:
        """Ready only when every worker serves a table (the current one or newer is fine)."""
        if not self.writer.generation:
            return False, "no table published yet"
        for d in self.describe():
            if not d["alive"]:
                return False, f"worker {d['index']} is not running"
            if d["generation"] == 0:
                return False, f"worker {d['index']} serves no table yet"
        return True, "ok"
