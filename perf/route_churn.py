"""Route churn under load: FluxGate must swap tables without failing a request.

    python perf/route_churn.py [--duration 30] [--edits 50] [--workers 2]
                               [--connections 50] [--threads 1] [--json out.json]

Starts the nginx upstream and FluxGate (file mode, 2 workers by default), runs
wrk against the route ``perf`` (GET /), and meanwhile edits the config file
``--edits`` times in a row. Each edit
  * changes the hit route ``perf``: its second rule matches a new path and a
    header wrk never sends, so the outcome of GET / is unchanged while the
    virtual host wrk uses is recompiled and re-published;
  * toggles a second HTTPRoute ``perf-extra`` (present on odd edits, with a
    new path each time; absent on even ones), which wrk never hits.
After each edit the harness polls /debug/config until every worker reports
the new generation before it makes the next edit, and records two latencies:
edit -> published (the control process's generation moved) and edit -> all
workers serving it. wrk runs for at least --duration and until the last edit
has settled plus one second.

Goal: zero failed requests (wrk socket errors + non-2xx) and every edit picked
up. Exit status: 0 measured, 1 the harness failed, 3 the goal was missed and
--fail-on-miss was given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

import harness as h


def routes_for(edit: int) -> list[dict]:
    """The HTTPRoutes of config state ``edit`` (0 is the initial state)."""
    unreachable = {  # needs a header wrk never sends, so GET / is unaffected
        "matches": [{"path": {"type": "PathPrefix", "value": f"/churn/{edit}"},
                     "headers": [{"name": "x-perf-churn", "value": str(edit)}]}],
        **h.BACKEND,
    }
    routes = [h.http_route("perf", [dict(h.BACKEND), unreachable])]
    if edit % 2:
        routes.append(h.http_route("perf-extra", [{
            "matches": [{"path": {"type": "PathPrefix", "value": f"/extra/{edit}"}}], **h.BACKEND}]))
    return routes


def wait_edit(fg: h.Fluxgate, gen_before: int, timeout: float, poll: float = 0.01):
    """Poll /debug/config after an edit. Returns (published_s, served_s, config);
    a time is None when it did not happen within ``timeout``."""
    t0 = time.monotonic()
    published = None
    cfg: dict = {}
    while time.monotonic() - t0 < timeout:
        fg.proc.check_alive()
        try:
            cfg = fg.debug_config()
        except (OSError, ValueError):  # a busy admin server is not a verdict
            time.sleep(poll)
            continue
        now = time.monotonic() - t0
        gen, workers = cfg.get("generation", 0), cfg.get("workers", [])
        if gen > gen_before:
            published = published if published is not None else now
            if len(workers) >= fg.workers and all(w.get("generation") == gen for w in workers):
                return published, now, cfg
        time.sleep(poll)
    return published, None, cfg


def churn(fg: h.Fluxgate, edits: int, timeout: float) -> list[dict]:
    """Make ``edits`` edits in a row, each waited for; one record per edit."""
    records = []
    cfg = fg.debug_config()
    for i in range(1, edits + 1):
        gen_before = cfg.get("generation", 0)
        pids_before = sorted(w.get("pid") for w in cfg.get("workers", []))
        fg.write_config(routes_for(i))
        published, served, cfg = wait_edit(fg, gen_before, timeout)
        cfg = cfg or {"generation": gen_before, "workers": []}  # admin never answered
        records.append({
            "edit": i, "generation_before": gen_before, "generation": cfg.get("generation"),
            "published_ms": None if published is None else published * 1e3,
            "served_ms": None if served is None else served * 1e3,
            "worker_pids_changed": sorted(w.get("pid") for w in cfg.get("workers", [])) != pids_before,
        })
        if served is None:
            print(f"  edit {i}: not served by every worker within {timeout}s "
                  f"(generation {cfg.get('generation')}, workers {cfg.get('workers')})", flush=True)
        else:
            fg.proc.remember(fg.pids(cfg))  # a restarted worker must be reaped too
    return records


def latency_line(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<34} (none)"
    return (f"{label:<34} p50 {h.percentile(values, 50):7.1f} ms   p99 {h.percentile(values, 99):7.1f} ms   "
            f"max {max(values):7.1f} ms   (n={len(values)})")


def run(args, workdir: Path) -> int:
    (up_port,) = h.free_ports(1)
    h.start_nginx("upstream", workdir / "upstream", h.nginx_upstream_conf(workdir / "upstream", up_port), up_port)
    fg = h.Fluxgate(workdir, args.workers, up_port, args.fluxgate, tag="perf-churn")
    fg.write_config(routes_for(0))
    fg.start()
    status, body = h.http_get(fg.listen_port)
    if status != 200 or body != h.UPSTREAM_BODY:
        raise h.HarnessError(f"fluxgate: GET / gave {status} {body[:80]!r}, expected 200 {h.UPSTREAM_BODY!r}")

    print(h.machine_note())
    print(f"route churn: {args.edits} edits under load, FLUXGATE_WORKERS={args.workers}, "
          f"wrk -t{args.threads} -c{args.connections} for >= {args.duration:g}s", flush=True)
    # wrk's own -d is only a ceiling; it is stopped with SIGINT (it still reports)
    # once the edits have settled and --duration has passed.
    ceiling = args.duration + args.edits * args.edit_timeout + 30
    wrk = h.start_wrk(workdir, fg.listen_port, ceiling, args.connections, args.threads, "wrk-churn")
    started = time.monotonic()
    time.sleep(1.0)  # let the load settle before the first edit
    records = churn(fg, args.edits, args.edit_timeout)
    edits_done = time.monotonic()
    time.sleep(max(1.0, args.duration - (edits_done - started)))  # tail: requests after the last swap
    wrk.signal(signal.SIGINT)
    res = h.finish_wrk(wrk, 30)

    served = [r["served_ms"] for r in records if r["served_ms"] is not None]
    published = [r["published_ms"] for r in records if r["published_ms"] is not None]
    missed = len(records) - len(served)
    coalesced = sum(1 for r in records if r["served_ms"] is not None
                    and r["generation"] - r["generation_before"] > 1)
    restarts = sum(1 for r in records if r["worker_pids_changed"])
    ok = res.errors == 0 and missed == 0

    print()
    print(f"requests      {res.requests} in {res.seconds:.1f}s ({res.rps:.0f} req/s, "
          f"p50 {res.p50_ms:.3f} ms, p99 {res.p99_ms:.3f} ms)")
    print(f"failed        {res.errors} (socket errors {res.socket_errors}, non-2xx {res.non_2xx})   "
          f"goal 0: {'PASS' if res.errors == 0 else 'MISS'}")
    print(f"edits         {len(records)} in {edits_done - started - 1.0:.1f}s; not picked up within "
          f"{args.edit_timeout:g}s: {missed}; more than one generation per edit: {coalesced}; "
          f"edits during which worker pids changed: {restarts}")
    print(latency_line("edit -> published (control):", published))
    print(latency_line("edit -> served by all workers:", served))
    if args.json:
        report = {"machine": h.machine_note(), "settings": vars(args), "fluxgate": fg.argv,
                  "wrk": {**dataclasses.asdict(res), "errors": res.errors}, "edits": records,
                  "summary": {"failed_requests": res.errors, "edits_missed": missed,
                              "published_p50_ms": h.percentile(published, 50),
                              "published_p99_ms": h.percentile(published, 99),
                              "served_p50_ms": h.percentile(served, 50),
                              "served_p99_ms": h.percentile(served, 99), "pass": ok}}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 3 if args.fail_on_miss and not ok else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="minimum seconds of load (30)")
    p.add_argument("--edits", type=int, default=50, help="route changes in a row (50)")
    p.add_argument("--workers", type=int, default=2, help="FLUXGATE_WORKERS (2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--edit-timeout", type=float, default=10.0, help="max wait for one edit to be served (10 s)")
    p.add_argument("--json", metavar="PATH", help="also write every edit and the summary as JSON")
    p.add_argument("--fluxgate", metavar="CMD", help="command that runs fluxgate (default: the console "
                   "script beside this python, on PATH, else python -m control.cli)")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 3 unless zero failures and all edits served")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    if args.edits < 1 or args.workers < 1:
        p.error("--edits and --workers must be at least 1")

    return h.run_in_workdir(run, args, "fluxgate-churn-")


if __name__ == "__main__":
    sys.exit(main())
