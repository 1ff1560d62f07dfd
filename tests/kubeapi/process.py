"""The server as a child process, for tests whose gateway runs in another process.

Rules: the port is the one the child bound (read from its first stdout line,
``listening <port>``), never chosen here; the child is stopped by its pid
(SIGTERM, a deadline, then SIGKILL); the helpers that ``KubeAPIServer`` has
in-process are reached over its ``/_kubeapi/*`` endpoints.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class KubeAPIProcess:
    def __init__(self, *args: str, port: int = 0):
        """``args`` go to ``python -m tests.kubeapi`` (e.g. "--bookmark-interval", "0.2");
        ``port``: 0 picks a free one, else that port (a server that comes back on
        the address a client knows)."""
        self.args = args
        self.requested_port = port
        self.proc: subprocess.Popen | None = None
        self._stderr = None
        self.port: int | None = None

    def start(self, deadline: float = 10.0) -> "KubeAPIProcess":
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.kubeapi", "--port", str(self.requested_port), *self.args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        end = time.monotonic() + deadline
        line = b""
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self._stderr.seek(0)
                err = self._stderr.read()
                self.stop()
                raise RuntimeError(f"kubeapi did not start: {line!r} "
                                   f"{err.decode(errors='replace')}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        word, _, port = line.decode().strip().partition(" ")
        if word != "listening":
            self.stop()
            raise RuntimeError(f"kubeapi said {line!r}")
        self.port = int(port)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, deadline: float = 5.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=deadline)
            except ProcessLookupError:
                pass
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return proc.returncode

    def __enter__(self) -> "KubeAPIProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers over /_kubeapi ------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = None if body is None else json.dumps(body)
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            payload = json.loads(resp.read() or b"{}")
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {payload}")
            return payload
        finally:
            conn.close()

    def apply(self, obj: dict) -> dict:
        return self._call("POST", "/_kubeapi/apply", obj)["items"][0]

    def compact(self) -> int:
        return self._call("POST", "/_kubeapi/compact")["resourceVersion"]

    def drop_watches(self, graceful: bool = False) -> int:
        query = "?graceful=true" if graceful else ""
        return self._call("POST", "/_kubeapi/drop-watches" + query)["dropped"]

    @property
    def watch_count(self) -> int:
        return self._call("GET", "/_kubeapi/watches")["count"]
