"""Fixtures for the shared-memory ring tests: unique shards, child processes.

Everything a test creates is torn down here even when the test fails: child
processes are stopped by their own pid (terminate, wait with a deadline, kill),
ring objects are closed, and every /dev/shm segment of the test's shard is
unlinked.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid

import posix_ipc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHILD = os.path.join(HERE, "shm_ring_child.py")
for _p in (REPO, HERE):  # `shm` and the helper module, whatever the import mode
    if _p not in sys.path:
        sys.path.insert(0, _p)

from shm_ring_child import shard_segments  # noqa: E402


def _unlink_all(shard: str) -> None:
    for rest in shard_segments(shard):
        try:
            posix_ipc.unlink_shared_memory(f"/fluxgate.{shard}.{rest}")
        except posix_ipc.ExistentialError:
            pass


def _new_shard_name() -> str:
    return f"t{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def new_shard():
    """A factory of unique shard names; all their segments are unlinked at teardown."""
    made: list[str] = []

    def make(name: str | None = None) -> str:
        made.append(name or _new_shard_name())
        return made[-1]

    yield make
    for s in made:
        _unlink_all(s)


@pytest.fixture
def shard(new_shard) -> str:
    return new_shard()


@pytest.fixture
def closing():
    """Register ring writers/readers; they are closed (writers unlink) at teardown."""
    objs = []

    def add(obj):
        objs.append(obj)
        return obj

    yield add
    for obj in reversed(objs):
        try:
            obj.close()
        except Exception:  # teardown must reach every object
            pass


class Child:
    def __init__(self, proc: subprocess.Popen, stderr_path: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.stderr_path = stderr_path
        self._buf = b""

    def stderr(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def readline(self, timeout: float = 15.0) -> str:
        """One line of the child's stdout, waiting at most ``timeout`` seconds."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            if b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                return line.decode()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break  # EOF: the child exited
                self._buf += chunk
        raise AssertionError(
            f"child {self.pid} gave no line within {timeout}s "
            f"(exit {self.proc.poll()}); stderr:\n{self.stderr()}"
        )

    def ready(self, timeout: float = 15.0) -> list[str]:
        line = self.readline(timeout)
        assert line.startswith("READY"), f"unexpected line {line!r}; stderr:\n{self.stderr()}"
        return line.split()[1:]

    def kill_and_reap(self, timeout: float = 10.0) -> None:
        """SIGKILL by pid and reap, so the pid is really gone (not a zombie)."""
        self.proc.kill()
        self.proc.wait(timeout=timeout)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for f in (proc.stdout, proc.stdin):
        if f is not None:
            f.close()


@pytest.fixture
def spawn(tmp_path):
    """Start ``shm_ring_child.py MODE ARGS...``; every child is stopped at teardown."""
    procs: list[subprocess.Popen] = []

    def start(mode: str, *args) -> Child:
        err = tmp_path / f"child-{len(procs)}-{mode}.stderr"
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
        with open(err, "wb") as errf:
            proc = subprocess.Popen(
                [sys.executable, CHILD, mode, *map(str, args)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errf,
                cwd=REPO,
                env=env,
            )
        procs.append(proc)
        return Child(proc, str(err))

    yield start
    for p in procs:
        _stop(p)
