"""FluxGate vs nginx as a reverse proxy: one worker each, same upstream, same load.

    python perf/bench_proxy.py [--duration 10] [--connections 50] [--threads 1]
                               [--rounds 3] [--json out.json] [--selftest]

One nginx upstream (1 worker, fixed 5-byte body) serves both proxies:
  nginx     1 worker, proxy_pass to an upstream block with keepalive 64
  fluxgate  FLUXGATE_WORKERS=1, file mode, one HTTPRoute to the same upstream
Both run for the whole benchmark; rounds alternate in an ABBA pattern (nginx,
fluxgate, fluxgate, nginx, ...) so slow drift on a noisy machine hits both
sides alike, and the report shows medians. For each round: wrk's requests/s,
p50/p99 latency, errors (socket errors + non-2xx), and the proxy's CPU time per
request (utime+stime of its whole process tree over the wrk run / requests).

--selftest runs only the nginx side for 2 s to prove the tooling works.
Exit status: 0 measured (or selftest passed), 1 the harness failed,
3 a target was missed and --fail-on-miss was given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import harness as h

TARGET_RPS_RATIO = 0.95  # fluxgate throughput must be at least this share of nginx's (issue 11)
TARGET_CPU_RATIO = 1.1  # fluxgate CPU per request may be at most this multiple (issue 11)

# --vary: every request differs from the one before on its connection (path and
# query carry a counter, and a header a second one), as real traffic does, so
# nothing that recognises a repeated request can help either proxy.
VARY_SCRIPT = """\
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/item/" .. n .. "?page=" .. (n % 97), {["X-Seq"] = tostring(n * 7919)})
end
"""


class Side:
    """One proxy under test: a name, the port wrk hits, the pids to charge."""

    def __init__(self, name: str, port: int, pids, tree):
        self.name, self.port = name, port
        self.pids = pids  # called before a run (may ask the admin API)
        self.tree = tree  # called after a run (only /proc, so it costs the proxy nothing)


def measure(side: Side, upstream: h.Proc, workdir: Path, args, duration: float) -> dict:
    """One wrk run against ``side``, with CPU accounting of proxy and upstream."""
    pids = side.pids()
    up_before, before = h.cpu_snapshot(upstream.tree()), h.cpu_snapshot(pids)
    wrk = h.start_wrk(workdir, side.port, duration, args.connections, args.threads, f"wrk-{side.name}",
                      args.script)
    res = h.finish_wrk(wrk, duration + 30)
    # Re-list the tree so a process born during the run is charged too.
    after = h.cpu_snapshot({*pids, *side.tree()})
    up_after = h.cpu_snapshot(upstream.tree())
    cpu, up_cpu = h.cpu_seconds(before, after), h.cpu_seconds(up_before, up_after)
    per_req = lambda s: s * 1e6 / res.requests if res.requests else float("nan")  # noqa: E731
    return {
        "proxy": side.name, **dataclasses.asdict(res), "errors": res.errors,
        "cpu_seconds": cpu, "cpu_us_per_req": per_req(cpu),
        "upstream_cpu_us_per_req": per_req(up_cpu), "pids": sorted(pids),
    }


def summarize(runs: list[dict]) -> dict:
    """Median of each metric over rounds; errors are summed (one is too many)."""
    pick = lambda k: h.median([r[k] for r in runs])  # noqa: E731
    return {
        "rounds": len(runs), "rps": pick("rps"), "p50_ms": pick("p50_ms"), "p99_ms": pick("p99_ms"),
        "cpu_us_per_req": pick("cpu_us_per_req"), "upstream_cpu_us_per_req": pick("upstream_cpu_us_per_req"),
        "requests": sum(r["requests"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs), "errors": sum(r["errors"] for r in runs),
    }


def paired(runs: list[dict], a: str, b: str) -> dict:
    """Median over rounds of ``a``'s figure / ``b``'s in the same round (rps, CPU per request)."""
    sa, sb = [r for r in runs if r["proxy"] == a], [r for r in runs if r["proxy"] == b]
    return {key: h.median([x[key] / y[key] for x, y in zip(sa, sb) if y[key]]) for key in ("rps", "cpu_us_per_req")}


def round_line(n: int, r: dict) -> str:
    return (f"  round {n} {r['proxy']:<8} {r['rps']:>10.0f} req/s  p50 {r['p50_ms']:7.3f} ms  "
            f"p99 {r['p99_ms']:7.3f} ms  errors {r['errors']:>5}  "
            f"cpu {r['cpu_us_per_req']:7.1f} us/req  (upstream {r['upstream_cpu_us_per_req']:5.1f})")


def print_table(summary: dict[str, dict]) -> None:
    print()
    print(f"{'proxy':<10}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'CPU us/req':>12}{'upstream us/req':>17}")
    for name, s in summary.items():
        print(f"{name:<10}{s['rps']:>11.0f}{s['p50_ms']:>9.3f}{s['p99_ms']:>9.3f}{s['errors']:>8}"
              f"{s['cpu_us_per_req']:>12.1f}{s['upstream_cpu_us_per_req']:>17.1f}")


def verdicts(summary: dict[str, dict]) -> dict:
    fg, ng = summary["fluxgate"], summary["nginx"]
    rps_ratio = fg["rps"] / ng["rps"]
    cpu_ratio = fg["cpu_us_per_req"] / ng["cpu_us_per_req"]
    # Fast error responses inflate throughput, so a side with errors cannot pass.
    clean = fg["errors"] == 0 and ng["errors"] == 0
    return {
        "throughput_ratio": rps_ratio, "throughput_target": TARGET_RPS_RATIO,
        "throughput_pass": clean and rps_ratio >= TARGET_RPS_RATIO,
        "cpu_ratio": cpu_ratio, "cpu_target": TARGET_CPU_RATIO,
        "cpu_pass": clean and cpu_ratio <= TARGET_CPU_RATIO, "error_free": clean,
    }


def print_verdicts(v: dict) -> None:
    mark = lambda ok: "PASS" if ok else ("MISS" if v["error_free"] else "MISS (errors)")  # noqa: E731
    print()
    print(f"fluxgate/nginx throughput   {v['throughput_ratio']:5.2f}x   "
          f"target >= {v['throughput_target']:.2f}x   {mark(v['throughput_pass'])}")
    print(f"fluxgate/nginx CPU/request  {v['cpu_ratio']:5.2f}x   "
          f"target <= {v['cpu_target']:.2f}x   {mark(v['cpu_pass'])}")
    if not v["error_free"]:
        print("WARNING: errors during measurement; the numbers are not comparable.")


def check_proxies(sides: list[Side]) -> None:
    """Each proxy must return the upstream's body, or we would measure something else."""
    for side in sides:
        status, body = h.http_get(side.port)
        if status != 200 or body != h.UPSTREAM_BODY:
            raise h.HarnessError(f"{side.name}: GET / gave {status} {body[:80]!r}, "
                                 f"expected 200 {h.UPSTREAM_BODY!r}")


def run(args, workdir: Path) -> int:
    args.script = None
    if args.vary:
        args.script = workdir / "vary.lua"
        args.script.write_text(VARY_SCRIPT)
    up_port, ng_port = h.free_ports(2)
    upstream = h.start_nginx("upstream", workdir / "upstream", h.nginx_upstream_conf(workdir / "upstream", up_port), up_port)
    ngx = h.start_nginx("nginx", workdir / "nginx", h.nginx_proxy_conf(workdir / "nginx", ng_port, up_port), ng_port)
    sides = [Side("nginx", ng_port, ngx.tree, ngx.tree)]
    fg_info = None
    if not args.selftest:
        # nginx runs with access_log off: so does FluxGate unless --env says otherwise.
        fg = h.Fluxgate(workdir, 1, up_port, args.fluxgate, tag="perf-bench",
                        env={"FLUXGATE_ACCESS_LOG": "off", "FLUXGATE_SHUTDOWN_DELAY_SECONDS": "0",
                             **_env(args.env, workdir, up_port)})
        cfg = fg.start()
        fg_info = {"command": fg.argv, "generation": cfg.get("generation"), "workers": cfg.get("workers")}
        # The fluxgate tree after a run is re-listed from /proc plus the pids
        # /debug/config named before it, so the run itself makes no admin call.
        sides.append(Side("fluxgate", fg.listen_port, fg.pids, fg.proc.tree))
        if args.compare:
            # A second FluxGate (another checkout: "before"), measured in the same
            # rounds, so a before/after figure shares the machine's moment too.
            (workdir / "before").mkdir()
            before = h.Fluxgate(workdir / "before", 1, up_port, args.compare, tag="perf-before",
                                env=_env(args.compare_env, workdir / "before", up_port))
            before.start()
            sides.append(Side("before", before.listen_port, before.pids, before.proc.tree))
    check_proxies(sides)

    duration, rounds, warmup = (2.0, 1, 0.0) if args.selftest else (args.duration, args.rounds, args.warmup)
    print(h.machine_note())
    print(f"load: wrk -t{args.threads} -c{args.connections} -d{duration:g}s, {rounds} round(s) per proxy, "
          f"order ABBA..., upstream: nginx 1 worker, body {h.UPSTREAM_BODY!r}, "
          f"requests: {'each different (--vary)' if args.vary else 'GET / repeated'}")
    if warmup:
        for side in sides:  # fill connection pools and caches; not recorded
            h.finish_wrk(h.start_wrk(workdir, side.port, warmup, args.connections, args.threads, "warmup",
                                     args.script), warmup + 30)
    runs: list[dict] = []
    for n in range(1, rounds + 1):
        for side in (sides if n % 2 else sides[::-1]):
            r = measure(side, upstream, workdir, args, duration)
            runs.append(r)
            print(round_line(n, r), flush=True)

    summary = {s.name: summarize([r for r in runs if r["proxy"] == s.name]) for s in sides}
    print_table(summary)
    v = verdicts(summary) if not args.selftest else None
    if v:
        print_verdicts(v)
    if "before" in summary:
        b, ng = summary["before"], summary["nginx"]
        v = {**v, "before_throughput_ratio": b["rps"] / ng["rps"],
             "before_cpu_ratio": b["cpu_us_per_req"] / ng["cpu_us_per_req"]}
        print(f"before/nginx throughput     {v['before_throughput_ratio']:5.2f}x   "
              f"CPU/request {v['before_cpu_ratio']:5.2f}x   (--compare, same rounds)")
        # fluxgate against before round by round (each pair measured back to
        # back, ABBA): the machine's drift over the run cancels in each pair,
        # which a ratio of the two medians does not do.
        pairs = paired(runs, "fluxgate", "before")
        v = {**v, "fluxgate_before_throughput_paired": pairs["rps"],
             "fluxgate_before_cpu_paired": pairs["cpu_us_per_req"]}
        print(f"fluxgate/before throughput  {pairs['rps']:5.3f}x   CPU/request {pairs['cpu_us_per_req']:5.3f}x   "
              f"(median of the {rounds} per-round ratios)")
    if args.json:
        report = {"machine": h.machine_note(), "settings": {**vars(args), "duration": duration, "rounds": rounds,
                                                            "warmup": warmup},
                  "fluxgate": fg_info, "runs": runs, "summary": summary, "verdicts": v}
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    if args.selftest:
        s = summary["nginx"]
        ok = s["requests"] > 0 and s["errors"] == 0 and s["cpu_us_per_req"] > 0
        print("\nselftest:", "OK" if ok else "FAILED (no requests, errors, or no CPU accounted)")
        return 0 if ok else 1
    if args.fail_on_miss and not (v["throughput_pass"] and v["cpu_pass"]):
        return 3
    return 0


def _env(pairs: list[str], workdir: Path, upstream_port: int) -> dict[str, str]:
    """``{dir}``: the side's work dir; ``{upstream}``: the upstream nginx's port (it
    answers any request 200, so it can stand in for an OTLP collector's sink)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("FLUXGATE_"):
            raise SystemExit(f"--env {pair!r}: expected FLUXGATE_NAME=VALUE")
        out[name] = value.replace("{dir}", str(workdir)).replace("{upstream}", str(upstream_port))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run (10)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--rounds", type=int, default=3, help="measured runs per proxy (3)")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded wrk run per proxy first (2 s; 0: none)")
    p.add_argument("--json", metavar="PATH", help="also write every run and the summary as JSON")
    p.add_argument("--fluxgate", metavar="CMD", help="command that runs fluxgate (default: the console "
                   "script beside this python, on PATH, else python -m control.cli)")
    p.add_argument("--compare", metavar="CMD", help="also measure this fluxgate command (e.g. another "
                   "checkout's), as side 'before', in the same rounds")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="a FLUXGATE_* setting for the measured FluxGate (repeatable; {dir} is its work dir,"
                        " {upstream} the upstream's port), e.g. FLUXGATE_ACCESS_LOG={dir}/access.log")
    p.add_argument("--compare-env", action="append", default=[], metavar="NAME=VALUE",
                   help="a FLUXGATE_* setting for the --compare FluxGate (repeatable)")
    p.add_argument("--vary", action="store_true", help="make every request differ (path, query, a header)")
    p.add_argument("--selftest", action="store_true", help="nginx side only, 2 s: check the tooling")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 3 when a target is missed")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    if args.threads > args.connections:
        p.error("--threads must not exceed --connections")

    return h.run_in_workdir(run, args, "fluxgate-perf-")


if __name__ == "__main__":
    sys.exit(main())
