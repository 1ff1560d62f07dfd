"""File-mode churn at scale (issue 11 item 5): start time, memory, edit-to-served, /healthz.

    python perf/file_churn.py [--routes 10000] [--files 100] [--edits 10] [--workers 2]
                              [--hosts N] [--json out.json] [--fail-on-miss] [--keep]

Writes a config directory: ``gateway.yaml`` (Gateway ``perf``, Service +
EndpointSlice ``upstream`` pointing at the nginx upstream) and ``--files``
files ``routes-000.yaml`` ... holding ``--routes`` HTTPRoutes in total
(contiguous blocks). Route i is ``r<i>`` in namespace default: hostname
``h<i mod hosts>.perf.test`` (``--hosts``, default one per route) and path
PathPrefix ``/r<i>``, so every route compiles and has its own match.

Then ``fluxgate run --config DIR`` starts with FLUXGATE_WORKERS=--workers,
FLUXGATE_WATCH_INTERVAL=--watch-interval (0.05), FLUXGATE_HOLDOFF_MS=--holdoff-ms
(0) and FLUXGATE_LOG_LEVEL=info (the "rebuilt" log line carries routes_reused).
Measured:

* start to ready: from the process start until /readyz is 200, until every
  worker (GET /debug/workers) serves one generation, and until a GET of the
  last route through the listener answers 200;
* memory: VmRSS and VmHWM (/proc/<pid>/status) of the control process and
  each worker, once ready and again after the edits;
* ``--edits`` single-route edits, each to another file, rewritten atomically
  (temp file + rename): route k's path becomes ``/r<k>-e<n>``. Timed from the
  rename to published (the control process's fluxgate_table_generation on
  /metrics moved), to served by every worker (/debug/workers), and to a GET
  of the new path through the listener answering 200 (then the old path must
  answer 404). Polled every 10 ms; the next edit waits for the previous one;
* routes_reused / routes_translated of each edit's publish, from the control
  process's "rebuilt" log line of that generation;
* /healthz on the admin port, polled every ~10 ms by a thread for the whole
  run (from the first answer on): max and p99 latency, overall and during the
  edits.

Goals: an edit served by every worker < 200 ms at <= 10k routes, < 1 s above
(judged on the worst edit); /healthz < 100 ms at any size (judged on the
worst answer). /debug/config is never polled: it returns the whole table,
which at 100k routes is itself a rebuild-sized job.

Exit status: 0 measured, 1 the harness failed, 3 a goal missed and
--fail-on-miss was given.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import threading
import time
from pathlib import Path

import harness as h

GOAL_HEALTHZ_MS = 100.0


def goal_edit_ms(routes: int) -> float:
    return 200.0 if routes <= 10_000 else 1000.0


# --- the config directory ---------------------------------------------------------


class ConfigDir:
    """The generated files; ``edit`` rewrites one of them with one route changed."""

    def __init__(self, path: Path, routes: int, files: int, hosts: int):
        self.path, self.routes, self.files, self.hosts = path, routes, files, hosts
        self.per_file = -(-routes // files)  # ceil: the last file may hold fewer
        self.paths: dict[int, str] = {}  # route -> its edited path (absent: /r<i>)
        path.mkdir(parents=True, exist_ok=True)

    def host(self, i: int) -> str:
        return f"h{i % self.hosts}.perf.test"

    def route_path(self, i: int) -> str:
        return self.paths.get(i, f"/r{i}")

    def route(self, i: int) -> dict:
        r = h.http_route(f"r{i}", [{"matches": [{"path": {"type": "PathPrefix", "value": self.route_path(i)}}],
                                    **h.BACKEND}])
        r["spec"]["hostnames"] = [self.host(i)]
        return r

    def file_routes(self, f: int) -> range:
        return range(f * self.per_file, min(self.routes, (f + 1) * self.per_file))

    def file_name(self, f: int) -> Path:
        return self.path / f"routes-{f:03d}.yaml"

    def write_file(self, f: int) -> None:
        h.write_atomic(self.file_name(f), h.to_yaml([self.route(i) for i in self.file_routes(f)]))

    def write_all(self, listen_port: int, upstream_port: int) -> None:
        h.write_atomic(self.path / "gateway.yaml", h.to_yaml(h.gateway_objects(listen_port, upstream_port, [])))
        for f in range(self.files):
            if self.file_routes(f):
                self.write_file(f)

    def edit(self, n: int, edits: int) -> tuple[int, str, str]:
        """Edit ``n`` (1-based) of ``edits``: files spread over the directory,
        a different route each time. Returns (route, old path, new path)."""
        used = [f for f in range(self.files) if self.file_routes(f)]
        f = used[((n - 1) * len(used)) // max(1, edits) % len(used)]
        block = self.file_routes(f)
        i = block[(n * 7) % len(block)]
        old = self.route_path(i)
        self.paths[i] = f"/r{i}-e{n}"
        self.write_file(f)
        return i, old, self.paths[i]


# --- HTTP -------------------------------------------------------------------------


def get(port: int, path: str, host: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(h.LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get_json(port: int, path: str, timeout: float):
    status, body = get(port, path, timeout=timeout)
    if status != 200:
        raise h.HarnessError(f"{path}: HTTP {status}")
    return json.loads(body)


def published_generation(admin_port: int, timeout: float) -> int:
    """The control process's generation, from /metrics (cheap at any size)."""
    status, body = get(admin_port, "/metrics", timeout=timeout)
    m = re.search(rb"^fluxgate_table_generation (\S+)$", body, re.M)
    if status != 200 or not m:
        raise h.HarnessError(f"/metrics: HTTP {status}, no fluxgate_table_generation")
    return int(float(m.group(1)))


def all_serving(workers: list[dict], count: int, at_least: int) -> int | None:
    """The generation every worker serves, if all ``count`` are alive on one >= at_least."""
    gens = {w.get("generation") for w in workers}
    if len(workers) >= count and all(w.get("alive") for w in workers) and len(gens) == 1:
        gen = gens.pop()
        if isinstance(gen, int) and gen >= at_least:
            return gen
    return None


# --- /healthz ---------------------------------------------------------------------


class HealthProbe(threading.Thread):
    """GET /healthz every ~``interval`` s; records (start offset, latency) from the
    first answer on. A request that hangs is one sample as long as it hung; one
    refused before the first answer is not a sample (the admin port is not up
    yet), but ``first_answer_s`` says when that was."""

    def __init__(self, port: int, interval: float = 0.01, timeout: float = 600.0):
        super().__init__(daemon=True, name="healthz")
        self.port, self.interval, self.timeout = port, interval, timeout
        self.t0 = time.monotonic()
        self.wall0 = time.time()  # for matching samples with log lines
        self.samples: list[tuple[float, float, bool]] = []  # (start s, latency ms, 200)
        self.first_answer_s: float | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        answered = False
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                ok = get(self.port, "/healthz", timeout=self.timeout)[0] == 200
                if not answered:
                    self.first_answer_s = time.monotonic() - self.t0
                answered = True
            except OSError:
                ok = False
            took = time.monotonic() - start
            if answered:
                self.samples.append((start - self.t0, took * 1e3, ok))
            self.stopping.wait(max(0.0, self.interval - took))

    def stop(self) -> None:
        self.stopping.set()
        self.join(self.timeout + 5)

    def summary(self, since: float | None = None, until: float | None = None) -> dict:
        lat = [ms for t, ms, _ in self.samples
               if (since is None or t >= since) and (until is None or t <= until)]
        failed = sum(1 for t, _, ok in self.samples if not ok
                     and (since is None or t >= since) and (until is None or t <= until))
        return {"samples": len(lat), "failed": failed,
                "p50_ms": h.percentile(lat, 50), "p99_ms": h.percentile(lat, 99),
                "max_ms": max(lat) if lat else float("nan"),
                "over_goal": sum(1 for x in lat if x >= GOAL_HEALTHZ_MS),
                # when they happened (seconds after the process start), to find the cause
                "slow": [[round(t, 3), round(ms, 1), round(self.wall0 + t, 3)] for t, ms, _ in self.samples
                         if ms >= GOAL_HEALTHZ_MS / 2
                         and (since is None or t >= since) and (until is None or t <= until)]}


# --- /proc and the log ------------------------------------------------------------


def status_kib(pid: int) -> dict:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def memory(control_pid: int, workers: list[dict]) -> dict:
    return {"control": status_kib(control_pid),
            "workers": [{"pid": w.get("pid"), **status_kib(w.get("pid") or 0)} for w in workers]}


def rebuilt_lines(log_text: str) -> dict[int, dict]:
    """The control process's "rebuilt" log lines (JSON log format), by generation."""
    out = {}
    for line in log_text.splitlines():
        if '"rebuilt"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "rebuilt" and isinstance(rec.get("generation"), int):
            out[rec["generation"]] = rec
    return out


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f} MiB"


# --- the run ----------------------------------------------------------------------


def wait_ready(fg: h.Fluxgate, cfgdir: ConfigDir, t0: float, timeout: float) -> tuple[dict, list[dict]]:
    """Times from t0 (the process start) to /readyz 200, all workers serving, and a
    GET of the last route answering 200."""
    times: dict = {}
    deadline = t0 + timeout
    last = cfgdir.routes - 1
    workers: list[dict] = []
    while time.monotonic() < deadline:
        fg.proc.check_alive()
        try:
            if "readyz_s" not in times and get(fg.admin_port, "/readyz", timeout=timeout)[0] == 200:
                times["readyz_s"] = time.monotonic() - t0
            if "readyz_s" in times and "served_s" not in times:
                workers = get_json(fg.admin_port, "/debug/workers", timeout)
                if all_serving(workers, fg.workers, 1):
                    times["served_s"] = time.monotonic() - t0
            if "served_s" in times:
                if get(fg.listen_port, cfgdir.route_path(last), cfgdir.host(last))[0] == 200:
                    times["answered_s"] = time.monotonic() - t0
                    return times, workers
        except (OSError, ValueError, h.HarnessError):
            pass
        time.sleep(0.01)
    raise h.HarnessError(f"fluxgate not serving after {timeout}s ({times})\n{fg.proc.log_tail()}")


def wait_edit(fg: h.Fluxgate, gen_before: int, host: str, path: str, timeout: float,
              poll: float = 0.01) -> tuple[dict, list[dict]]:
    """After an edit: seconds to published, served by every worker, answered 200."""
    t0 = time.monotonic()
    out: dict = {}
    workers: list[dict] = []
    while time.monotonic() - t0 < timeout:
        fg.proc.check_alive()
        left = max(1.0, timeout - (time.monotonic() - t0))
        try:
            if "published_s" not in out and published_generation(fg.admin_port, left) > gen_before:
                out["published_s"] = time.monotonic() - t0
            if "published_s" in out and "served_s" not in out:
                workers = get_json(fg.admin_port, "/debug/workers", left)
                gen = all_serving(workers, fg.workers, gen_before + 1)
                if gen is not None:
                    out["served_s"], out["generation"] = time.monotonic() - t0, gen
            if "served_s" in out and get(fg.listen_port, path, host, left)[0] == 200:
                out["answered_s"] = time.monotonic() - t0
                return out, workers
        except (OSError, ValueError, h.HarnessError):  # a busy admin server is not a verdict
            pass
        time.sleep(poll)
    return out, workers


def run(args, workdir: Path) -> int:
    (up_port,) = h.free_ports(1)
    h.start_nginx("upstream", workdir / "upstream", h.nginx_upstream_conf(workdir / "upstream", up_port), up_port)
    cfgdir = ConfigDir(workdir / "config", args.routes, args.files, args.hosts or args.routes)
    env = {"FLUXGATE_WATCH_INTERVAL": str(args.watch_interval), "FLUXGATE_HOLDOFF_MS": str(args.holdoff_ms),
           "FLUXGATE_LOG_LEVEL": args.log_level, "FLUXGATE_LOG_FORMAT": "json"}
    fg = h.Fluxgate(workdir, args.workers, up_port, args.fluxgate, tag="perf-files", env=env,
                    config_path=cfgdir.path)
    t_gen = time.monotonic()
    cfgdir.write_all(fg.listen_port, up_port)
    print(h.machine_note())
    print(f"file churn: {args.routes} routes in {args.files} files (+ gateway.yaml), "
          f"{cfgdir.hosts} hostnames, FLUXGATE_WORKERS={args.workers}, "
          f"WATCH_INTERVAL={args.watch_interval:g}, HOLDOFF_MS={args.holdoff_ms}; "
          f"config written in {time.monotonic() - t_gen:.1f}s", flush=True)

    t0 = time.monotonic()
    fg.launch()
    health = HealthProbe(fg.admin_port, args.healthz_interval)
    health.t0 = t0
    health.start()
    try:
        return measure(args, fg, cfgdir, health, t0)
    finally:
        health.stop()


def measure(args, fg: h.Fluxgate, cfgdir: ConfigDir, health: HealthProbe, t0: float) -> int:
    start, workers = wait_ready(fg, cfgdir, t0, args.start_timeout)
    control_pid = fg.proc.pid  # the console script is the control process; checked below
    fg.proc.remember([w["pid"] for w in workers if w.get("pid")])
    mem_ready = memory(control_pid, workers)
    print(f"start -> /readyz {start['readyz_s']:.2f}s, served by all workers {start['served_s']:.2f}s, "
          f"last route answered {start['answered_s']:.2f}s", flush=True)

    records = []
    t_edits = time.monotonic() - t0
    for n in range(1, args.edits + 1):
        gen_before = published_generation(fg.admin_port, args.edit_timeout)
        pids_before = sorted(w.get("pid") for w in workers)
        i, old, new = cfgdir.edit(n, args.edits)
        times, workers = wait_edit(fg, gen_before, cfgdir.host(i), new, args.edit_timeout)
        rec = {"edit": n, "route": f"r{i}", "file": cfgdir.file_name(i // cfgdir.per_file).name,
               "generation_before": gen_before, "generation": times.get("generation"),
               **{k.replace("_s", "_ms"): v * 1e3 for k, v in times.items() if k.endswith("_s")},
               "worker_pids_changed": sorted(w.get("pid") for w in workers) != pids_before}
        if "answered_ms" in rec:
            rec["old_path_status"] = get(fg.listen_port, old, cfgdir.host(i))[0]
            fg.proc.remember([w["pid"] for w in workers if w.get("pid")])
        records.append(rec)
        fmt = lambda k: f"{rec[k]:9.1f} ms" if k in rec else "      n/a   "  # noqa: E731
        print(f"  edit {n:3d} {rec['route']:>8}: published {fmt('published_ms')}  served {fmt('served_ms')}  "
              f"answered {fmt('answered_ms')}", flush=True)
    t_done = time.monotonic() - t0
    time.sleep(0.5)  # the log line of the last publish follows the workers' notification
    mem_after = memory(control_pid, workers)

    logged = rebuilt_lines(fg.proc.log_text())
    for rec in records:
        line = logged.get(rec["generation"]) if rec.get("generation") else None
        if line:
            rec.update({k: line.get(k) for k in ("routes_reused", "routes_translated", "routes_compiled",
                                                 "waited_ms", "translate_ms", "compile_ms", "publish_ms")})
    log_pids = {line.get("pid") for line in logged.values()}
    if log_pids and log_pids != {control_pid}:
        print(f"note: 'rebuilt' logged by pid(s) {sorted(log_pids)}, memory read from pid {control_pid}")
    first = logged.get(min(logged)) if logged else {}
    health_all, health_edits = health.summary(), health.summary(since=t_edits, until=t_done)
    health_all["first_answer_s"] = health.first_answer_s
    return report(args, fg, cfgdir, start, mem_ready, mem_after, first, records,
                  health_all, health_edits)


def report(args, fg, cfgdir, start, mem_ready, mem_after, first, records, health_all, health_edits) -> int:
    served = [r["served_ms"] for r in records if "served_ms" in r]
    published = [r["published_ms"] for r in records if "published_ms" in r]
    answered = [r["answered_ms"] for r in records if "answered_ms" in r]
    missed = len(records) - len(answered)
    stale_old = sum(1 for r in records if r.get("old_path_status") not in (None, 404))
    goal_ms = goal_edit_ms(args.routes)
    edit_ok = missed == 0 and bool(served) and max(served) < goal_ms
    health_ok = health_all["samples"] > 0 and health_all["max_ms"] < GOAL_HEALTHZ_MS and health_all["failed"] == 0

    def mem_line(label, m):
        c = m["control"]
        ws = ", ".join(f"{mib(w.get('VmRSS'))} (peak {mib(w.get('VmHWM'))})" for w in m["workers"])
        return f"{label:<22} control {mib(c.get('VmRSS'))} (peak {mib(c.get('VmHWM'))}); workers {ws}"

    def lat_line(label, values):
        if not values:
            return f"{label:<34} (none)"
        return (f"{label:<34} p50 {h.percentile(values, 50):9.1f} ms   max {max(values):9.1f} ms   "
                f"(n={len(values)})")

    print()
    print(f"routes        {args.routes} in {args.files} files, {cfgdir.hosts} hostnames, "
          f"{args.workers} workers")
    print(f"start         /readyz {start['readyz_s']:.2f}s; served by all workers {start['served_s']:.2f}s; "
          f"last route answered {start['answered_s']:.2f}s"
          + (f"  (first table: translate {first.get('translate_ms')} ms, compile {first.get('compile_ms')} ms)"
             if first else ""))
    print(mem_line("memory when ready", mem_ready))
    print(mem_line("memory after edits", mem_after))
    print(f"edits         {len(records)}; not answered within {args.edit_timeout:g}s: {missed}; "
          f"old path still answering: {stale_old}; edits during which worker pids changed: "
          f"{sum(1 for r in records if r['worker_pids_changed'])}")
    print(lat_line("edit -> published (control):", published))
    print(lat_line("edit -> served by all workers:", served))
    print(lat_line("edit -> new path answered 200:", answered))
    reused = [(r.get("routes_reused"), r.get("routes_translated")) for r in records]
    print("routes reused / translated per edit: " + ", ".join(f"{a}/{b}" for a, b in reused))
    first_s = health_all["first_answer_s"]
    print(f"/healthz first answered {'never' if first_s is None else f'{first_s:.2f}s'} after the process "
          "start (refused before: not samples)")
    for label, s in (("/healthz, whole run:", health_all), ("/healthz, during edits:", health_edits)):
        print(f"{label:<24} p50 {s['p50_ms']:8.1f} ms   p99 {s['p99_ms']:9.1f} ms   max {s['max_ms']:9.1f} ms   "
              f"(n={s['samples']}, >= {GOAL_HEALTHZ_MS:g} ms: {s['over_goal']}, failed: {s['failed']})")
    print(f"goal: edit served by every worker < {goal_ms:g} ms (worst edit)   "
          f"{'PASS' if edit_ok else 'MISS'}")
    print(f"goal: /healthz < {GOAL_HEALTHZ_MS:g} ms (worst answer)            {'PASS' if health_ok else 'MISS'}")
    if args.json:
        out = {"machine": h.machine_note(), "settings": vars(args), "fluxgate": fg.argv, "start": start,
               "memory_kib": {"ready": mem_ready, "after_edits": mem_after}, "first_rebuild": first,
               "edits": records, "healthz": {"whole_run": health_all, "during_edits": health_edits},
               "summary": {"edit_goal_ms": goal_ms, "served_max_ms": max(served) if served else None,
                           "served_p50_ms": h.percentile(served, 50), "edits_missed": missed,
                           "healthz_max_ms": health_all["max_ms"], "edit_pass": edit_ok,
                           "healthz_pass": health_ok}}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 3 if args.fail_on_miss and not (edit_ok and health_ok) else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--routes", type=int, default=10_000, help="HTTPRoutes in total (10000)")
    p.add_argument("--files", type=int, default=100, help="route files (100)")
    p.add_argument("--hosts", type=int, default=0, help="distinct hostnames (default: one per route)")
    p.add_argument("--edits", type=int, default=10, help="single-route edits, one after another (10)")
    p.add_argument("--workers", type=int, default=2, help="FLUXGATE_WORKERS (2)")
    p.add_argument("--watch-interval", type=float, default=0.05, help="FLUXGATE_WATCH_INTERVAL (0.05)")
    p.add_argument("--holdoff-ms", type=int, default=0, help="FLUXGATE_HOLDOFF_MS (0)")
    p.add_argument("--log-level", default="info", choices=("debug", "info"),
                   help="FLUXGATE_LOG_LEVEL (info: the 'rebuilt' line is needed)")
    p.add_argument("--healthz-interval", type=float, default=0.01, help="seconds between /healthz polls (0.01)")
    p.add_argument("--start-timeout", type=float, default=600.0, help="max wait until serving (600 s)")
    p.add_argument("--edit-timeout", type=float, default=300.0, help="max wait for one edit (300 s)")
    p.add_argument("--json", metavar="PATH", help="also write every sample and the summary as JSON")
    p.add_argument("--fluxgate", metavar="CMD", help="command that runs fluxgate (default: the console "
                   "script beside this python, on PATH, else python -m control.cli)")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 3 if a goal is missed")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs)")
    args = p.parse_args(argv)
    if args.routes < 1 or args.files < 1 or args.edits < 0 or args.workers < 1 or args.hosts < 0:
        p.error("--routes, --files and --workers must be at least 1; --edits and --hosts not negative")
    return h.run_in_workdir(run, args, "fluxgate-files-")


if __name__ == "__main__":
    sys.exit(main())
