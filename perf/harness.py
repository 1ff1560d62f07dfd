"""Shared helpers for FluxGate's black-box load tests (standard library only).

Rules this module keeps, because a benchmark that breaks them lies or leaks:

* Black box. Nothing here imports FluxGate (control/, dataplane/, shm/). The
  gateway is a subprocess (``fluxgate run --config PATH``) reached over HTTP.
* Loopback only. Every address is ``LOOPBACK``; no helper takes a host.
* Free ports only. Ports come from binding port 0; none is fixed.
* Every process we start is registered and stopped by its own pid: SIGTERM,
  a deadline, then SIGKILL; descendants we saw (nginx workers, FluxGate
  workers) are remembered as (pid, start time) and killed by pid only if that
  exact process is still there. ``stop_all`` runs from ``finally`` blocks, from
  atexit, and after SIGTERM/SIGINT (turned into exceptions so ``finally`` runs).

CPU accounting reads utime+stime from /proc/<pid>/stat for a process tree, plus
cutime+cstime so that a child reaped during the measurement is not lost.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parent.parent


class HarnessError(RuntimeError):
    """The tooling could not measure (a process failed, a wait timed out)."""


# --- ports, HTTP ------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports. All sockets stay open until every
    port is chosen, so the kernel cannot hand out the same one twice."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    """One GET to 127.0.0.1:port; returns (status, body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http_ok(port: int, proc: "Proc", timeout: float, path: str = "/") -> bytes:
    """Poll until GET returns 200; fail early (with the log) if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            status, body = http_get(port, path, timeout=1.0)
            if status == 200:
                return body
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise HarnessError(f"{proc.name}: GET {path} on port {port} not 200 after {timeout}s ({last})\n{proc.log_tail()}")


# --- /proc ------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the ``(comm)``; index 0 is field 3 (state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()  # comm may hold spaces and ')'


def proc_identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time in ticks): names one process even if the pid is reused."""
    f = _stat_fields(pid)
    if f is None or f[0] in ("Z", "X"):
        return None
    return pid, int(f[19])


def _alive_as(ident: tuple[int, int]) -> bool:
    return proc_identity(ident[0]) == ident


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (scans /proc once, follows ppid)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f is not None:
                children.setdefault(int(f[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def cpu_snapshot(pids) -> dict[tuple[int, int], int]:
    """CPU ticks (utime+stime+cutime+cstime) per process identity."""
    snap = {}
    for pid in set(pids):
        f = _stat_fields(pid)
        if f is not None:
            snap[(pid, int(f[19]))] = sum(int(x) for x in f[11:15])
    return snap


def cpu_seconds(before: dict, after: dict) -> float:
    """CPU used between two snapshots. A process born in between counts from 0;
    one that exited is lost unless its parent reaped it (then it is in cutime)."""
    ticks = sum(t - before.get(ident, 0) for ident, t in after.items())
    return ticks / CLK_TCK


# --- processes --------------------------------------------------------------------

_STARTED: list["Proc"] = []


class Proc:
    """A process we started, logged to a file, stopped by its own pid."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 cwd: Path | None = None, stop_signal: int = signal.SIGTERM, stop_deadline: float = 10.0):
        self.name, self.argv, self.log_path = name, argv, Path(log_path)
        self.env, self.cwd = env, cwd
        self.stop_signal, self.stop_deadline = stop_signal, stop_deadline
        self.popen: subprocess.Popen | None = None
        self.known: set[tuple[int, int]] = set()  # descendants seen, to reap leftovers

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        try:
            # Own session: a terminal Ctrl-C reaches only the harness, which then
            # stops everything in order instead of racing its children.
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True,
            )
        finally:
            log.close()
        _STARTED.append(self)
        return self

    def remember(self, pids=()) -> None:
        """Record the live tree (and ``pids``) so stop() can reap leftovers."""
        for pid in [*descendants(self.pid), *pids]:
            ident = proc_identity(pid)
            if ident and pid != self.pid:
                self.known.add(ident)

    def tree(self) -> list[int]:
        return [self.pid, *descendants(self.pid)]

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise HarnessError(f"{self.name} exited with {self.popen.returncode}\n{self.log_tail()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in tail) or "  | (empty log)"

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.name} still running after {timeout}s") from None

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self) -> None:
        """Signal, wait up to the deadline, SIGKILL; then reap remembered leftovers."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.remember()
            self.signal(self.stop_signal)
            try:
                self.popen.wait(self.stop_deadline)
            except subprocess.TimeoutExpired:
                print(f"[perf] {self.name} (pid {self.pid}) ignored signal for "
                      f"{self.stop_deadline}s; SIGKILL", file=sys.stderr)
                self.popen.kill()
                self.popen.wait(5)
        # Children were told to exit by their parent; give them a moment, then
        # kill by pid only the exact processes we saw (same pid and start time).
        deadline = time.monotonic() + 3.0
        while any(_alive_as(i) for i in self.known) and time.monotonic() < deadline:
            time.sleep(0.05)
        for ident in self.known:
            if _alive_as(ident):
                print(f"[perf] {self.name}: leftover pid {ident[0]}; SIGKILL", file=sys.stderr)
                try:
                    os.kill(ident[0], signal.SIGKILL)
                except ProcessLookupError:
                    pass


def stop_all() -> None:
    """Stop every process we started, newest first (load, then proxies, then upstream)."""
    while _STARTED:
        proc = _STARTED.pop()
        try:
            proc.stop()
        except Exception as exc:  # keep stopping the others
            print(f"[perf] stopping {proc.name}: {exc}", file=sys.stderr)


def _raise_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Make SIGTERM/SIGINT unwind through ``finally`` and stop_all at exit."""
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGINT, _raise_on_signal)


def run_in_workdir(run, args, prefix: str) -> int:
    """Run ``run(args, workdir)`` in a fresh temp dir; stop every process and
    remove the dir afterwards (unless ``args.keep``), whatever happens."""
    install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return run(args, workdir)
    except HarnessError as exc:
        print(f"\nharness error: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- wrk --------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int  # wrk counts status >= 400 here ("Non-2xx or 3xx responses")

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise HarnessError(f"wrk: cannot read latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Read wrk 4.x ``--latency`` output; the error lines appear only when non-zero."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if not (total and rps and p50 and p99):
        raise HarnessError("wrk: unexpected output:\n" + text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2) + total.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )


def start_wrk(workdir: Path, port: int, duration: float, connections: int, threads: int,
              name: str = "wrk") -> Proc:
    """Start wrk against 127.0.0.1:port; SIGINT makes it stop early and still report."""
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
            "--latency", f"http://{LOOPBACK}:{port}/"]
    log = workdir / f"{name}.{time.monotonic_ns()}.out"
    return Proc(name, argv, log, stop_signal=signal.SIGINT, stop_deadline=10.0).start()


def finish_wrk(proc: Proc, timeout: float) -> WrkResult:
    code = proc.wait(timeout)
    _STARTED.remove(proc)
    text = proc.log_text()
    if code != 0:
        raise HarnessError(f"wrk exited with {code}:\n{text}")
    return parse_wrk(text)


# --- nginx ------------------------------------------------------------------------

_NGINX_MAIN = """\
# Generated by perf/harness.py; one instance per temp prefix.
{user}worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # Keep downstream connections for the whole run, as FluxGate does; nginx's
    # default (1000 requests) would add reconnects to nginx's side only.
    keepalive_timeout 75s;
    keepalive_requests 1000000;
{body}
}}
"""

UPSTREAM_BODY = b"hello"


def nginx_upstream_conf(prefix: Path, port: int) -> str:
    """The shared upstream: a fixed 5-byte body, keep-alive on, no logging."""
    body = f"""\
    server {{
        listen {LOOPBACK}:{port} backlog=4096;
        location / {{ return 200 "{UPSTREAM_BODY.decode()}"; }}
    }}"""
    return _nginx_main(prefix, body)


def nginx_proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    """nginx as the reference reverse proxy: pooled keep-alive to the upstream."""
    body = f"""\
    upstream backend {{
        server {LOOPBACK}:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {LOOPBACK}:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return _nginx_main(prefix, body)


def _nginx_main(prefix: Path, body: str) -> str:
    # As root, nginx would run workers as "nobody", which cannot use our 0700
    # temp dirs; keep the workers as the invoking user instead.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return _NGINX_MAIN.format(user=user, prefix=prefix, body=body)


def start_nginx(name: str, prefix: Path, conf: str, port: int, timeout: float = 10.0) -> Proc:
    """Start nginx (master + 1 worker) in its own prefix; returns once it answers 200."""
    for sub in ("logs", "tmp", "conf"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf_path = prefix / "conf" / "nginx.conf"
    conf_path.write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    # -e: nginx opens its error log before reading the config; point it into
    # the prefix so it never touches the system's log directory.
    argv = [nginx, "-p", str(prefix), "-c", str(conf_path), "-e", str(prefix / "logs" / "error.log")]
    proc = Proc(name, argv, prefix / "logs" / "stdout.log").start()
    try:
        wait_http_ok(port, proc, timeout)
    except HarnessError as exc:
        errlog = (prefix / "logs" / "error.log")
        raise HarnessError(f"{exc}\nerror.log:\n{errlog.read_text() if errlog.exists() else ''}") from None
    proc.remember()
    return proc


# --- FluxGate ---------------------------------------------------------------------


def _yaml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if v == {}:
        return "{}"
    if v == []:
        return "[]"
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def _yaml_lines(v, depth: int) -> list[str]:
    pad = "  " * depth
    nested = lambda x: isinstance(x, (dict, list)) and x  # noqa: E731
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            key = k if re.fullmatch(r"[A-Za-z0-9_./-]+", k) else json.dumps(k)
            if nested(x):
                out.append(f"{pad}{key}:")
                out.extend(_yaml_lines(x, depth + 1))
            else:
                out.append(f"{pad}{key}: {_yaml_scalar(x)}")
    else:
        for x in v:
            if nested(x):
                sub = _yaml_lines(x, depth + 1)
                out.append(f"{pad}- {sub[0].lstrip()}")  # same column as the sub-block
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_yaml_scalar(x)}")
    return out


def to_yaml(docs: list[dict]) -> str:
    """Block-style multi-document YAML for plain dict/list/str/int/bool data."""
    return "".join("---\n" + "\n".join(_yaml_lines(d, 0)) + "\n" for d in docs)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one rename so a polling reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def http_route(name: str, rules: list[dict]) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"name": "perf"}], "rules": rules},
    }


BACKEND = {"backendRefs": [{"name": "upstream", "port": 80}]}


def gateway_objects(listen_port: int, upstream_port: int, routes: list[dict] | None = None) -> list[dict]:
    """Gateway ``perf`` + Service/EndpointSlice ``upstream`` + routes (default:
    one HTTPRoute ``perf`` sending everything to the upstream)."""
    if routes is None:
        routes = [http_route("perf", [dict(BACKEND)])]
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "perf", "namespace": "default"},
            "spec": {"gatewayClassName": "fluxgate",
                     "listeners": [{"name": "http", "protocol": "HTTP", "port": listen_port}]},
        },
        *routes,
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "upstream", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": upstream_port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "upstream-perf", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "upstream"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": upstream_port}],
            "endpoints": [{"addresses": [LOOPBACK], "conditions": {"ready": True}}],
        },
    ]


def fluxgate_command(override: str | None) -> tuple[list[str], Path | None]:
    """(argv prefix, cwd): --fluxgate if given, else the ``fluxgate`` console
    script beside this interpreter or on PATH, else ``python -m control.cli``
    from the repository root."""
    if override:
        return shlex.split(override), None
    beside = Path(sys.executable).parent / "fluxgate"
    if beside.exists():
        return [str(beside)], None
    found = shutil.which("fluxgate")
    if found:
        return [found], None
    return [sys.executable, "-m", "control.cli"], REPO_ROOT


class Fluxgate:
    """One ``fluxgate run --config`` in file mode, watched through its admin port."""

    def __init__(self, workdir: Path, workers: int, upstream_port: int, command: str | None = None,
                 tag: str = "perf", env: dict[str, str] | None = None, config_path: Path | None = None):
        self.workdir, self.workers, self.upstream_port = workdir, workers, upstream_port
        self.listen_port, self.admin_port = free_ports(2)
        # config_path may be a directory the caller fills (file_churn.py); start()
        # writes the default one-file config only when nothing is there.
        self.config_path = config_path if config_path is not None else workdir / "fluxgate.yaml"
        self.extra_env = dict(env or {})  # more FLUXGATE_* settings; they win over the defaults
        self.argv, self.cwd = fluxgate_command(command)
        self.shard = f"{tag}-{os.getpid()}"
        self.proc: Proc | None = None

    def write_config(self, routes: list[dict] | None = None) -> None:
        write_atomic(self.config_path, to_yaml(gateway_objects(self.listen_port, self.upstream_port, routes)))

    def start(self, timeout: float = 60.0) -> dict:
        """Start, wait for /readyz, then until every worker serves the table."""
        self.launch()
        deadline = time.monotonic() + timeout
        while True:
            self.proc.check_alive()
            try:
                if http_get(self.admin_port, "/readyz", 1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise HarnessError(f"fluxgate not ready after {timeout}s\n{self.proc.log_tail()}")
            time.sleep(0.05)
        cfg = self.wait_generation(1, max(1.0, deadline - time.monotonic()))
        wait_http_ok(self.listen_port, self.proc, 10.0)
        return cfg

    def launch(self) -> Proc:
        """Start the process and return at once (start() also waits for it to serve)."""
        if not self.config_path.exists():
            self.write_config()
        # Only the contract's variables: FluxGate rejects unknown FLUXGATE_* names,
        # and an inherited one would silently change what we measure.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
        env.update(FLUXGATE_WORKERS=str(self.workers), FLUXGATE_ADMIN_PORT=str(self.admin_port),
                   FLUXGATE_ADMIN_ADDRESS=LOOPBACK, FLUXGATE_BIND_ADDRESS=LOOPBACK,
                   FLUXGATE_SHARD=self.shard, FLUXGATE_LOG_LEVEL="warning")
        env.update(self.extra_env)
        argv = [*self.argv, "run", "--config", str(self.config_path)]
        # Generous deadline: FluxGate drains in-flight requests on SIGTERM.
        self.proc = Proc("fluxgate", argv, self.workdir / "fluxgate.log", env=env, cwd=self.cwd,
                         stop_deadline=40.0).start()
        return self.proc

    def debug_config(self) -> dict:
        status, body = http_get(self.admin_port, "/debug/config", 2.0)
        if status != 200:
            raise HarnessError(f"/debug/config: HTTP {status}")
        return json.loads(body)

    def wait_generation(self, at_least: int, timeout: float, poll: float = 0.01) -> dict:
        """Return /debug/config once generation >= at_least and all ``workers``
        workers report that generation. Also remembers worker pids for cleanup."""
        deadline = time.monotonic() + timeout
        cfg: dict = {}
        while time.monotonic() < deadline:
            assert self.proc is not None
            self.proc.check_alive()
            try:
                cfg = self.debug_config()
            except (OSError, ValueError):
                time.sleep(poll)
                continue
            gen, workers = cfg.get("generation", 0), cfg.get("workers", [])
            if (gen >= at_least and len(workers) >= self.workers
                    and all(w.get("generation") == gen for w in workers)):
                self.proc.remember(self.pids(cfg))
                return cfg
            time.sleep(poll)
        raise HarnessError(f"fluxgate: workers not all on generation >= {at_least} after {timeout}s; "
                           f"last /debug/config generation={cfg.get('generation')} "
                           f"workers={cfg.get('workers')}")

    def pids(self, cfg: dict | None = None) -> list[int]:
        """Control process + workers (from /debug/config) + anything else in the tree."""
        assert self.proc is not None
        cfg = cfg if cfg is not None else self.debug_config()
        named = [cfg.get("control_pid"), *(w.get("pid") for w in cfg.get("workers", []))]
        pids = set(self.proc.tree())
        for pid in named:
            if isinstance(pid, int) and pid > 0:
                pids.update([pid, *descendants(pid)])
        return sorted(pids)


# --- small statistics -------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); honest for small samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_note() -> str:
    cores = len(os.sched_getaffinity(0))
    return (f"machine: {cores} cores shared by wrk, the upstream and the proxy "
            f"(nothing pinned; expect noise)")

