"""Kubernetes-mode churn: change-to-serving latency, status settle time, memory.

    python perf/k8s_churn.py [--routes 5000] [--changes 200] [--status-routes 1000]
                             [--workers 2] [--holdoff-ms N] [--gap 0.25] [--json out.json] [--keep]

Issue 5's benchmark. Unlike the other perf/ scripts this one is not a pure
black box: it runs the project's test Kubernetes API server
(``python -m tests.kubeapi``, a subprocess) and, for the status part, the
controller's ``StatusWriter`` in this process (``fluxgate controller`` is not
part of the measurement).

1. The API server gets a GatewayClass, a Gateway, one echo backend (Service +
   EndpointSlice; ``examples/echo.py``) and ``--routes`` HTTPRoutes
   (``r0000`` ... each on path ``/r0000`` ...), applied in bulk; then
   ``fluxgate run --kubernetes`` (``--workers`` workers) starts against it
   (a kubeconfig file) and the benchmark waits until every worker serves the
   table and a probe of the last route answers 200.
2. Memory: VmRSS of the control process and of each worker (/proc/<pid>/status,
   pids from /debug/config) with every route served.
3. ``--changes`` single-route changes in a row: route k's PathPrefix becomes a
   new unique value, ``--gap`` seconds apart (default 0.25: isolated edits,
   each after a quiet period longer than the hold-off; ``--gap 0``: back to
   back, which the gateway's hold-off batches). For each, the clock starts when the API write returns
   and stops when /debug/workers shows every worker on a generation newer
   than the one they all served before the write (nothing else changes the
   cluster meanwhile, so that generation is the one with the change; a GET of
   the new path answering 200 afterwards checks it). Polled every 2 ms.
4. Status: the gateway is stopped; a KubernetesSource + ObjectCache +
   translate() give the report, a first StatusWriter pass settles the world,
   then ``--status-routes`` new routes are applied and the time from the last
   apply returning to the writer's pass finishing (source caught up,
   translate, write) is measured, with the PUTs per object counted (goal: at
   most one) and every new route's status checked (Accepted=True).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import harness as h

sys.path.insert(0, str(h.REPO_ROOT))

from tests.kubeapi import KubeAPIProcess  # noqa: E402

GROUP = "gateway.networking.k8s.io"
GOAL_P99_MS = 50.0
GOAL_STATUS_S = 5.0


# --- objects ----------------------------------------------------------------------


def route(i: int, path: str | None = None) -> dict:
    return {
        "apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute",
        "metadata": {"name": f"r{i:04d}", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": path or f"/r{i:04d}"}}],
            "backendRefs": [{"name": "echo", "port": 80}]}]},
    }


def base_objects(listen_port: int, echo_port: int) -> list[dict]:
    return [
        {"apiVersion": f"{GROUP}/v1", "kind": "GatewayClass", "metadata": {"name": "fluxgate"},
         "spec": {"controllerName": "fluxgate.io/gateway-controller"}},
        {"apiVersion": f"{GROUP}/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"gatewayClassName": "fluxgate",
                  "listeners": [{"name": "http", "protocol": "HTTP", "port": listen_port}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": echo_port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "echo-1", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "echo"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": echo_port}],
         "endpoints": [{"addresses": [h.LOOPBACK], "conditions": {"ready": True}}]},
    ]


def apply_bulk(api: KubeAPIProcess, objs: list[dict], chunk: int = 500) -> None:
    for i in range(0, len(objs), chunk):
        api._call("POST", "/_kubeapi/apply", {"kind": "List", "items": objs[i:i + chunk]})


def write_kubeconfig(path: Path, port: int) -> Path:
    path.write_text(json.dumps({  # JSON is YAML
        "apiVersion": "v1", "kind": "Config", "current-context": "perf",
        "clusters": [{"name": "perf", "cluster": {"server": f"http://{h.LOOPBACK}:{port}"}}],
        "users": [{"name": "perf", "user": {}}],
        "contexts": [{"name": "perf", "context": {"cluster": "perf", "user": "perf"}}],
    }))
    return path


# --- the gateway ------------------------------------------------------------------


class Admin:
    """A keep-alive connection to the admin port (cheap polling)."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> dict:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=5)
            try:
                self.conn.request("GET", path)
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                if resp.status != 200:
                    raise h.HarnessError(f"{path}: HTTP {resp.status}")
                return json.loads(body)
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A /proc/<pid>/status memory line in KiB: VmRSS, or its parts RssAnon
    (the process's own heap), RssShmem (the route table's ring pages it has
    read: shared with the other workers and the control process)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_of(control_pid: int, worker_pids: list[int]) -> dict:
    return {"control_kib": rss_kib(control_pid), "workers_kib": [rss_kib(p) for p in worker_pids],
            "workers_anon_kib": [rss_kib(p, "RssAnon") for p in worker_pids],
            "workers_shmem_kib": [rss_kib(p, "RssShmem") for p in worker_pids]}


def start_gateway(args, workdir: Path, api_port: int, listen_port: int) -> tuple[h.Proc, int]:
    admin_port = h.free_ports(1)[0]
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", api_port)
    argv, cwd = h.fluxgate_command(args.fluxgate)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
    env.update(FLUXGATE_WORKERS=str(args.workers), FLUXGATE_ADMIN_PORT=str(admin_port),
               FLUXGATE_ADMIN_ADDRESS=h.LOOPBACK, FLUXGATE_BIND_ADDRESS=h.LOOPBACK,
               FLUXGATE_SHARD=f"perf-k8s-{os.getpid()}", FLUXGATE_LOG_LEVEL=args.log_level,
               FLUXGATE_KUBECONFIG=str(kubeconfig))
    if args.holdoff_ms is not None:
        env["FLUXGATE_HOLDOFF_MS"] = str(args.holdoff_ms)
    proc = h.Proc("fluxgate", [*argv, "run", "--kubernetes"], workdir / "fluxgate.log", env=env,
                  cwd=cwd, stop_deadline=40.0).start()
    return proc, admin_port


def wait_served(proc: h.Proc, admin: Admin, workers: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            ws = admin.get("/debug/workers")
            last = ws
            gens = {w.get("generation") for w in ws}
            if len(ws) >= workers and all(w.get("alive") for w in ws) and len(gens) == 1 and 0 not in gens:
                return admin.get("/debug/config")
        except (OSError, ValueError, h.HarnessError):
            pass
        time.sleep(0.05)
    raise h.HarnessError(f"workers not serving after {timeout}s: {last}\n{proc.log_tail()}")


def probe(port: int, path: str, want: int = 200, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        try:
            status, _ = h.http_get(port, path, 2.0)
            if status == want:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise h.HarnessError(f"GET {path}: {status}, expected {want}")


def churn(api: KubeAPIProcess, admin: Admin, proc: h.Proc, args, listen_port: int) -> list[dict]:
    records = []
    ws = admin.get("/debug/workers")
    for i in range(args.changes):
        k = (i * 37 + 11) % args.routes
        new_path = f"/c{i:04d}-r{k:04d}"
        before = max(w["generation"] for w in ws)
        if any(w["generation"] != before for w in ws):
            raise h.HarnessError(f"workers not on one generation before change {i}: {ws}")
        t_write = time.monotonic()
        api.apply(route(k, new_path))
        t0 = time.monotonic()
        wall = time.time()  # to line up with the gateway's log (--keep --log-level info)
        served = None
        while time.monotonic() - t0 < args.change_timeout:
            ws = admin.get("/debug/workers")
            if all(w["generation"] > before for w in ws):
                served = time.monotonic() - t0
                break
            time.sleep(0.002)
        if served is None:
            proc.check_alive()
            raise h.HarnessError(f"change {i} not served within {args.change_timeout}s: {ws}")
        gens = {w["generation"] for w in ws}
        probe(listen_port, new_path)
        ws = admin.get("/debug/workers")
        records.append({"change": i, "route": k, "path": new_path, "served_ms": served * 1000,
                        "write_ms": (t0 - t_write) * 1000, "written_at": wall, "generations": sorted(gens),
                        "generation_steps": max(gens) - before})
        if args.gap:
            time.sleep(args.gap)
    return records


# --- status -----------------------------------------------------------------------


def status_phase(api: KubeAPIProcess, args, workdir: Path) -> dict:
    """Translate + StatusWriter.write() in this process against the API server."""
    from kubernetes import client
    from kubernetes import config as kubeconfig

    from control.cache import ObjectCache
    from control.sources.kubernetes import KubernetesSource, Settings
    from control.controller.status_writer import StatusWriter
    from control.translate import translate

    configuration = client.Configuration()
    kubeconfig.load_kube_config(config_file=str(workdir / "kubeconfig"),
                                client_configuration=configuration)
    source = KubernetesSource(configuration, Settings())
    source.start()
    cache = ObjectCache()
    try:
        deadline = time.monotonic() + 60
        while not source.synced:
            if time.monotonic() > deadline:
                raise h.HarnessError("status phase: the source did not sync: " + source.waiting())
            time.sleep(0.05)
        api_client = client.ApiClient(configuration)
        writer = StatusWriter(api_client)
        puts: Counter = Counter()
        real_put = writer._put

        def counted(key, obj):
            puts[key] += 1
            return real_put(key, obj)

        writer._put = counted

        def settle() -> tuple[object, float]:
            t = time.monotonic()
            cache.apply(source.load())
            report = translate(cache.objects(), default_class=None).status
            t_translate = time.monotonic() - t
            return writer.write(report), t_translate

        initial, initial_translate = settle()
        n0 = args.routes
        new = [route(n0 + i) for i in range(args.status_routes)]
        names = {("HTTPRoute", "default", r["metadata"]["name"]) for r in new}
        puts.clear()
        t_apply = time.monotonic()
        apply_bulk(api, new)
        t0 = time.monotonic()
        # The source must have seen every new route (what a controller's watch gives it).
        while True:
            loaded = {(o.kind, o.namespace, o.name) for o in source.load().objects if o.kind == "HTTPRoute"}
            if names <= loaded:
                break
            if time.monotonic() - t0 > 60:
                raise h.HarnessError("status phase: the source did not see the new routes")
            time.sleep(0.005)
        t_seen = time.monotonic() - t0
        result, t_translate = settle()
        settled = time.monotonic() - t0
        again, _ = settle()  # nothing changed: must write nothing
        # Check what is in the API now.
        capi = client.CustomObjectsApi(api_client)
        accepted = 0
        for key in names:
            obj = capi.get_namespaced_custom_object(GROUP, "v1", "default", "httproutes", key[2])
            for parent in (obj.get("status") or {}).get("parents", []):
                if any(c["type"] == "Accepted" and c["status"] == "True" for c in parent["conditions"]):
                    accepted += 1
                    break
        per_object = Counter(puts.values())
        return {
            "initial_pass": {"writes": initial.writes, "unchanged": initial.unchanged, "failed": initial.failed,
                             "elapsed_s": initial.elapsed, "translate_s": initial_translate},
            "new_routes": len(names),
            "apply_s": t0 - t_apply,
            "seen_s": t_seen,
            "translate_s": t_translate,
            "write_s": result.elapsed,
            "settled_s": settled,
            "writes": result.writes, "unchanged": result.unchanged, "skipped": result.skipped,
            "failed": result.failed, "conflicts": result.conflicts,
            "max_writes_per_object": max(puts.values(), default=0),
            "objects_written_more_than_once": sum(n for w, n in per_object.items() if w > 1),
            "new_routes_accepted": accepted,
            "second_pass_writes": again.writes,
        }
    finally:
        source.close()


# --- the run ----------------------------------------------------------------------


def run(args, workdir: Path) -> int:
    listen_port, echo_port = h.free_ports(2)
    h.Proc("echo", [sys.executable, str(h.REPO_ROOT / "examples" / "echo.py"), "--host", h.LOOPBACK, "--port", str(echo_port),
                    "--name", "echo"], workdir / "echo.log", cwd=h.REPO_ROOT).start()
    api = KubeAPIProcess("--bookmark-interval", "60", "--history-size", str(args.routes + args.status_routes
                                                                             + 2 * args.changes + 1000)).start()
    try:
        return measure(args, workdir, api, listen_port, echo_port)
    finally:
        api.stop()


def measure(args, workdir: Path, api: KubeAPIProcess, listen_port: int, echo_port: int) -> int:
    print(f"machine: {len(os.sched_getaffinity(0))} cores shared by the API server, the gateway and this script")
    t = time.monotonic()
    apply_bulk(api, base_objects(listen_port, echo_port))
    apply_bulk(api, [route(i) for i in range(args.routes)])
    print(f"applied {args.routes} HTTPRoutes + GatewayClass, Gateway, Service, EndpointSlice "
          f"in {time.monotonic() - t:.1f}s")

    t = time.monotonic()
    proc, admin_port = start_gateway(args, workdir, api.port, listen_port)
    admin = Admin(admin_port)
    cfg = wait_served(proc, admin, args.workers, args.start_timeout)
    probe(listen_port, f"/r{args.routes - 1:04d}")
    startup = time.monotonic() - t
    proc.remember([w["pid"] for w in cfg["workers"]])
    control_pid = cfg["control_pid"]
    worker_pids = [w["pid"] for w in cfg["workers"]]
    del cfg
    time.sleep(1.0)
    memory = memory_of(control_pid, worker_pids)
    print(f"gateway serving {args.routes} routes {startup:.1f}s after start "
          f"({args.workers} workers; control RSS {memory['control_kib'] / 1024:.1f} MiB, "
          f"workers {', '.join(f'{k / 1024:.1f}' for k in memory['workers_kib'])} MiB)", flush=True)

    records = churn(api, admin, proc, args, listen_port)
    served = [r["served_ms"] for r in records]
    multi = sum(1 for r in records if r["generation_steps"] != 1)
    memory_after = memory_of(control_pid, worker_pids)
    proc.stop()

    status = status_phase(api, args, workdir) if args.status_routes else None

    p50, p99 = h.percentile(served, 50), h.percentile(served, 99)
    latency_pass = p99 < GOAL_P99_MS
    print()
    print(f"{'measure':44} {'value':>22}   goal")
    print(f"{'changes':44} {len(records):>22}   (more than one generation per change: {multi})")
    print(f"{'pause between changes':44} {args.gap * 1000:>19.0f} ms   "
          f"({'isolated edits' if args.gap * 1000 >= (args.holdoff_ms or 100) else 'back to back: a burst'})")
    print(f"{'change -> every worker serving, p50':44} {p50:>19.1f} ms")
    print(f"{'change -> every worker serving, p99':44} {p99:>19.1f} ms   < {GOAL_P99_MS:g} ms   "
          f"{'PASS' if latency_pass else 'MISS'}")
    print(f"{'change -> every worker serving, max':44} {max(served):>19.1f} ms")
    status_pass = None
    if status:
        status_pass = (status["settled_s"] < GOAL_STATUS_S and status["max_writes_per_object"] <= 1
                       and status["failed"] == 0 and status["new_routes_accepted"] == status["new_routes"])
        print(f"{'status: %d new routes settled' % status['new_routes']:44} {status['settled_s']:>20.2f} s"
              f"   < {GOAL_STATUS_S:g} s, <= 1 write/object   {'PASS' if status_pass else 'MISS'}")
        print(f"{'  (source saw them / translate / write pass)':44} "
              f"{status['seen_s']:>5.2f} / {status['translate_s']:.2f} / {status['write_s']:.2f} s")
        print(f"{'  writes / max per object / failed':44} {status['writes']:>10} / "
              f"{status['max_writes_per_object']} / {status['failed']}"
              f"   (accepted: {status['new_routes_accepted']}/{status['new_routes']}; "
              f"no-op pass after: {status['second_pass_writes']} writes)")
        ip = status["initial_pass"]
        print(f"{'  first pass over all %d routes' % args.routes:44} {ip['elapsed_s']:>20.2f} s"
              f"   ({ip['writes']} writes)")
    print(f"{'control process RSS at %d routes' % args.routes:44} "
          f"{memory['control_kib'] / 1024:>18.1f} MiB   (after the changes: "
          f"{memory_after['control_kib'] / 1024:.1f})")
    for i, kib in enumerate(memory["workers_kib"]):
        print(f"{'worker %d RSS at %d routes' % (i, args.routes):44} {kib / 1024:>18.1f} MiB   "
              f"(after: {memory_after['workers_kib'][i] / 1024:.1f}; own heap "
              f"{memory['workers_anon_kib'][i] / 1024:.1f} -> {memory_after['workers_anon_kib'][i] / 1024:.1f},"
              f" shared table pages {memory['workers_shmem_kib'][i] / 1024:.1f} -> "
              f"{memory_after['workers_shmem_kib'][i] / 1024:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "machine": h.machine_note(), "startup_s": startup, "changes": records,
            "p50_ms": p50, "p99_ms": p99, "status": status, "memory": memory,
            "memory_after": memory_after,
            "verdicts": {"latency": latency_pass, "status": status_pass}}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.fail_on_miss and not (latency_pass and status_pass is not False):
        return 3
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--routes", type=int, default=5000, help="HTTPRoutes applied first (5000)")
    p.add_argument("--changes", type=int, default=200, help="single-route changes measured (200)")
    p.add_argument("--status-routes", type=int, default=1000,
                   help="new routes whose status is settled (1000; 0 skips the status part)")
    p.add_argument("--workers", type=int, default=2, help="gateway workers (2)")
    p.add_argument("--holdoff-ms", type=int, default=None,
                   help="FLUXGATE_HOLDOFF_MS for the gateway (default: the gateway's default)")
    p.add_argument("--gap", type=float, default=0.25,
                   help="seconds between one change being served and the next write (0.25: isolated "
                        "edits, past the 100 ms hold-off; 0: back to back, the gateway batches them)")
    p.add_argument("--change-timeout", type=float, default=10.0, help="seconds a change may take (10)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds to first serving (120)")
    p.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    p.add_argument("--fluxgate", metavar="CMD", help="command that runs fluxgate (default: the console "
                   "script beside this python, on PATH, else python -m control.cli)")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 3 when a goal is missed")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (kubeconfig, logs)")
    p.add_argument("--log-level", default="warning",
                   help="FLUXGATE_LOG_LEVEL for the gateway (info: one 'rebuilt' line per change with "
                        "its translate/compile/publish times; read it with --keep)")
    args = p.parse_args(argv)
    return h.run_in_workdir(run, args, "fluxgate-k8s-")


if __name__ == "__main__":
    sys.exit(main())
