"""Real processes on loopback for end-to-end tests: the gateway and echo backends.

Rules every helper here keeps:
* ports are free ones the kernel picked, never fixed numbers;
* every process is stopped by its own pid (SIGTERM, a deadline, then SIGKILL),
  from a fixture finaliser, so it happens when a test fails too;
* only 127.0.0.1 is ever a target.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on now (for a process that binds it soon).

    Racy on its own: prefer ``reserve_port`` when anything else may bind or
    connect in between.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reserve_port() -> tuple[int, socket.socket]:
    """A port held for the caller: bound (never listening) with SO_REUSEPORT.

    While the socket is open the kernel gives the port to no other bind(0)
    and to no outgoing connection, yet the gateway's workers, which bind
    with SO_REUSEPORT too, can still bind it. Close the socket when done.
    """
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1], s


def stop_process(proc: subprocess.Popen, deadline: float = 10.0) -> int | None:
    """SIGTERM, wait up to ``deadline``, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    return proc.poll()


ECHO = ROOT / "examples" / "echo.py"  # the demo's echo backend, also the tests' upstream


def echo_pattern(size: int) -> bytes:
    """The echo backend's ``x-echo-size`` body (its own ``pattern``), to check a transfer."""
    spec = importlib.util.spec_from_file_location("fluxgate_example_echo", ECHO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pattern(size)


class Echo:
    """An echo backend process (examples/echo.py) on a free loopback port."""

    def __init__(self, name: str, *args: str) -> None:
        """``args``: more command-line options (``--status 503``, ``--reset``)."""
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(ECHO), "--port", "0", "--name", name, *args],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("listening"):
            stop_process(self.proc)
            raise RuntimeError(f"echo backend {name} did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        stop_process(self.proc)


def objects(gateway_port: int, backends: dict[str, list[int]], routes: list[dict],
            hostname: str | None = None) -> list[dict]:
    """A Gateway on ``gateway_port``, a Service + EndpointSlice per backend, and routes."""
    listener = {"name": "http", "protocol": "HTTP", "port": gateway_port}
    if hostname:
        listener["hostname"] = hostname
    out = [{
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "fluxgate", "listeners": [listener]},
    }]
    for name, ports in backends.items():
        out.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": ports[0] if ports else 80}]},
        })
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": ports[0] if ports else 80}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}] if ports else [],
        })
    out.extend(routes)
    return out


def route(name: str, rules: list[dict], hostnames: list[str] | None = None) -> dict:
    spec: dict = {"parentRefs": [{"name": "gw"}], "rules": rules}
    if hostnames:
        spec["hostnames"] = hostnames
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec,
    }


def write_config(path: Path, docs: list[dict]) -> None:
    # Write then rename: the gateway never sees a half-written file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    os.replace(tmp, path)


class Gateway:
    """``fluxgate run`` as a real process tree (control + workers)."""

    def __init__(self, config: Path, workers: int = 2, args: list[str] | None = None,
                 **env: str) -> None:
        """``config``: the --config path, and where the log goes (its directory).
        ``args``: run ``fluxgate run ARGS`` instead of ``run --config CONFIG``
        (e.g. ``["--kubernetes"]``)."""
        self.config = config
        self.args = ["--config", str(config)] if args is None else list(args)
        self.admin_port = free_port()
        self.env = dict(os.environ)
        self.env = {k: v for k, v in self.env.items() if not k.startswith("FLUXGATE_")}
        self.env.update({
            "FLUXGATE_SHARD": f"t{os.getpid()}-{uuid.uuid4().hex[:8]}",
            "FLUXGATE_WORKERS": str(workers),
            "FLUXGATE_ADMIN_PORT": str(self.admin_port),
            "FLUXGATE_ADMIN_ADDRESS": "127.0.0.1",
            "FLUXGATE_BIND_ADDRESS": "127.0.0.1",
            "FLUXGATE_LOG_FORMAT": "text",
            "FLUXGATE_WATCH_INTERVAL": "0.05",
            "FLUXGATE_HOLDOFF_MS": "20",
            "FLUXGATE_SHUTDOWN_DELAY_SECONDS": "0",  # stop at once (tests of the delay set it)
            **env,
        })
        self.proc: subprocess.Popen | None = None
        self.log_path = config.parent / f"gateway-{self.admin_port}.log"

    def start(self, wait_ready: bool = True) -> "Gateway":
        for attempt in range(3):
            self._log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "control.cli", "run", *self.args],
                env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
            )
            if not wait_ready:
                return self
            try:
                self.wait_ready()
                return self
            except RuntimeError:
                # The admin port is picked free but not held (the admin server
                # must not use SO_REUSEPORT): if another process took it in
                # between, start again on a new one. Any other failure stands.
                if "cannot start the admin server" not in self.log() or attempt == 2:
                    raise
                self._log.close()
                self.admin_port = free_port()
                self.env["FLUXGATE_ADMIN_PORT"] = str(self.admin_port)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _, _ = self.admin("/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway not ready in {timeout}s:\n{self.log()}")

    def admin(self, path: str) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def debug_config(self) -> dict:
        return json.loads(self.admin("/debug/config")[2])

    def wait_generation(self, at_least: int, timeout: float = 10.0) -> int:
        """Wait until every worker serves generation >= ``at_least``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cfg = self.debug_config()
            gens = [w["generation"] for w in cfg["workers"]]
            if cfg["generation"] >= at_least and gens and min(gens) >= at_least:
                return cfg["generation"]
            time.sleep(0.02)
        raise TimeoutError(f"generation {at_least} not served in {timeout}s: {self.debug_config()['workers']}")

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.debug_config()["workers"] if w["pid"]]

    def stop(self) -> int | None:
        rc = None
        if self.proc is not None:
            rc = stop_process(self.proc, deadline=30)
        if getattr(self, "_log", None):
            self._log.close()
        return rc


def request(port: int, path: str = "/", host: str = "example.com", method: str = "GET",
            headers: dict | None = None, body: bytes | None = None, timeout: float = 10.0):
    """One request on a new connection; returns (status, headers dict, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def echoed(body: bytes) -> dict:
    return json.loads(body)
