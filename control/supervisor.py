"""The worker supervisor, in the manner of gunicorn's arbiter.

Rules:
* Signal handlers only enqueue (the runner's loop calls ``tick``); all
  reaping, killing and spawning happens in ``tick``, in this order:
  reap the dead → kill the hung → recycle the drifting → top up.
* A worker is started as ``python -m dataplane`` (never imported here) with
  its settings as JSON and the read end of a notify pipe; a byte on that pipe
  means "a new table is published", EOF means "the control process is gone".
* Its ring entry is cleared before it starts and after it is reaped, so a
  dead worker never pins a slot and a recycled pid is never mistaken for it.
* A crash loop is damped: a worker that dies young is restarted after a
  back-off that doubles up to 30 s; exit code 3 (cannot boot) stops the
  gateway, since restarting cannot help.
* Every stop has a deadline, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from control.config import Config
from shm.ring import RingWriter

log = logging.getLogger("fluxgate.supervisor")

EXIT_BOOT = 3  # dataplane.worker.EXIT_BOOT (not imported: control never imports dataplane)
YOUNG = 5.0  # a worker that dies sooner than this after its start counts as crashing
MAX_BACKOFF = 30.0


@dataclass
class WorkerProc:
    index: int
    proc: subprocess.Popen | None = None
    notify: int = -1  # write end of the notify pipe
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    not_before: float = 0.0  # earliest restart time
    last_exit: int | None = None
    stopping: bool = False
    kills: list[str] = field(default_factory=list)
    why: str = ""  # the supervisor's reason for stopping it (a restart reason label), if any


class Supervisor:
    def __init__(self, cfg: Config, writer: RingWriter) -> None:
        self.cfg = cfg
        self.writer = writer
        self.workers = {i: WorkerProc(i) for i in range(cfg.worker_count)}
        self.stopping = False
        self.shutting_down = False  # SIGTERM came: workers answer with Connection: close
        self.fatal: str | None = None  # set when the gateway must stop
        # Restarts by reason (fluxgate_worker_restarts_total{reason}): crashed
        # (non-zero exit), signal (killed from outside), exited (code 0 unasked),
        # hung, start_timeout, no_table, lagging (the supervisor's own).
        self.restart_reasons: Counter[str] = Counter()

    # --- starting ---------------------------------------------------------------

    def start_all(self) -> None:
        for w in self.workers.values():
            self._spawn(w)

    def closing(self) -> None:
        """The pod shuts down: every worker, and any started from now on, answers
        with ``Connection: close``."""
        self.shutting_down = True
        self.notify(b"c")

    def _spawn(self, w: WorkerProc) -> None:
        self.writer.reset_worker(w.index, 0)
        r, wfd = os.pipe()
        settings = msgspec.json.encode(self.cfg.worker_settings(w.index)).decode()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
        # Read by dataplane/__init__.py before any compiled module can be imported.
        env["FLUXGATE_NATIVE"] = "true" if self.cfg.native else "false"
        try:
            w.proc = subprocess.Popen(
                [sys.executable, "-m", "dataplane", "--settings", settings, "--notify-fd", str(r)],
                pass_fds=(r,), env=env, close_fds=True,
            )
        except OSError as exc:
            os.close(wfd)
            log.error("cannot start worker", extra={"fields": {"worker": w.index, "error": str(exc)}})
            w.not_before = time.monotonic() + max(1.0, w.backoff)
            return
        finally:
            os.close(r)
        os.set_blocking(wfd, False)
        w.notify = wfd
        if self.shutting_down:
            os.write(wfd, b"c")
        w.started = time.monotonic()
        w.stopping = False
        log.info("worker started", extra={"fields": {"worker": w.index, "pid": w.proc.pid}})

    # --- telling workers ----------------------------------------------------------

    def notify(self, what: bytes = b"!") -> None:
        """Wake every worker: a new generation is in the ring (``!``), or the
        pod shuts down (``c``: dataplane/worker.py)."""
        for w in self.workers.values():
            if w.notify >= 0:
                try:
                    os.write(w.notify, what)
                except BlockingIOError:
                    pass  # the pipe is full of wake-ups already: one is enough
                except OSError:
                    pass  # the worker is gone; the reaper will see it

    # --- the loop body --------------------------------------------------------------

    def tick(self) -> None:
        self._reap()
        if self.stopping:
            return
        now = time.monotonic()
        entries = {e.index: e for e in self.writer.workers()}
        current = self.writer.generation
        for w in self.workers.values():
            if w.proc is None or w.stopping:
                continue
            e = entries.get(w.index)
            age = now - w.started
            if e is None or e.pid != w.proc.pid:
                # Not yet registered in the ring: give it the start-up time.
                if age > self.cfg.worker_start_timeout:
                    self._kill(w, f"did not register within {self.cfg.worker_start_timeout:g}s", "start_timeout")
                continue
            if now - e.heartbeat > self.cfg.heartbeat_timeout:
                self._kill(w, f"no heartbeat for {now - e.heartbeat:.1f}s (hung)", "hung")
            elif current and e.generation == 0 and age > self.cfg.worker_start_timeout:
                self._kill(w, f"serves no table {age:.0f}s after start", "no_table")
            elif current and e.generation < current and now - self.writer.published_at > self.cfg.heartbeat_timeout:
                log.warning("worker lags behind the table; recycling it", extra={"fields": {
                    "worker": w.index, "pid": w.proc.pid, "generation": e.generation, "current": current}})
                w.why = "lagging"
                self._terminate(w)
        for w in self.workers.values():
            if w.proc is None and now >= w.not_before and self.fatal is None:
                self._spawn(w)

    def _reap(self) -> None:
        for w in self.workers.values():
            if w.proc is None:
                continue
            rc = w.proc.poll()
            if rc is None:
                continue
            pid = w.proc.pid
            w.proc = None
            w.last_exit = rc
            if w.notify >= 0:
                os.close(w.notify)
                w.notify = -1
            self.writer.reset_worker(w.index, 0)
            if self.stopping:
                continue
            lived = time.monotonic() - w.started
            how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"code {rc}"
            if rc == EXIT_BOOT:
                self.fatal = f"worker {w.index} cannot boot (exit code {rc}); see its log"
                log.error("worker cannot boot; stopping", extra={"fields": {"worker": w.index, "pid": pid}})
                continue
            w.restarts += 1
            reason, w.why = w.why or ("signal" if rc < 0 else "crashed" if rc else "exited"), ""
            self.restart_reasons[reason] += 1
            w.backoff = min(MAX_BACKOFF, max(1.0, w.backoff * 2)) if lived < YOUNG else 0.0
            w.not_before = time.monotonic() + w.backoff
            level = logging.INFO if w.stopping else logging.ERROR
            log.log(level, "worker exited; restarting", extra={"fields": {
                "worker": w.index, "pid": pid, "exit": how, "lived_s": round(lived, 2),
                "restart_in_s": w.backoff}})

    def _kill(self, w: WorkerProc, why: str, reason: str) -> None:
        w.why = reason
        log.error("killing worker", extra={"fields": {"worker": w.index, "pid": w.proc.pid, "reason": why}})
        w.kills.append(why)
        try:
            w.proc.kill()
        except ProcessLookupError:
            pass

    def _terminate(self, w: WorkerProc) -> None:
        w.stopping = True
        try:
            w.proc.terminate()
        except ProcessLookupError:
            pass

    # --- stopping -------------------------------------------------------------------

    def stop(self, deadline: float) -> None:
        """SIGTERM every worker (they drain), SIGKILL what is left at ``deadline``."""
        self.stopping = True
        for w in self.workers.values():
            if w.proc is not None:
                self._terminate(w)
        while time.monotonic() < deadline and any(
            w.proc is not None and w.proc.poll() is None for w in self.workers.values()
        ):
            time.sleep(0.02)
        for w in self.workers.values():
            if w.proc is not None and w.proc.poll() is None:
                log.warning("worker did not drain in time; killing", extra={"fields": {
                    "worker": w.index, "pid": w.proc.pid}})
                w.proc.kill()
                w.proc.wait()
        self._reap()

    # --- reporting --------------------------------------------------------------------

    def describe(self) -> list[dict]:
        entries = {e.index: e for e in self.writer.workers()}
        now = time.monotonic()
        out = []
        for w in self.workers.values():
            e = entries.get(w.index)
            pid = w.proc.pid if w.proc is not None else 0
            live = e is not None and e.pid == pid and pid != 0
            out.append({
                "index": w.index,
                "pid": pid,
                "generation": e.generation if live else 0,
                "heartbeat_age_s": round(now - e.heartbeat, 3) if live else None,
                "requests": e.requests if live else 0,
                "restarts": w.restarts,
                "last_exit": w.last_exit,
                "alive": w.proc is not None and w.proc.poll() is None,
            })
        return out

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
