"""Worker loss under load: SIGKILL a worker again and again while clients open
new connections, and count what is lost (issue 12, item 8).

    python perf/worker_kill.py [--kills 5] [--every 2] [--clients 8] [--workers 2]

Black box (perf/harness.py): an nginx upstream, ``fluxgate run`` with N
workers, client threads that each open a new connection per request. Every
``--every`` seconds the worker of slot 0 (from /debug/workers) is SIGKILLed.
Reported, as measured:

* per kill: how long until slot 0 had a live worker again, and until that
  worker had served a request (its slot's fluxgate_worker_requests_total grew);
* the time fewer than N workers were serving (sampled every 20 ms);
* requests failed, split by when their connection began: while the killed
  worker was alive (it may have had them in hand: those die with it) or after
  its death (these would be the queued connections a worker's socket lost).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


def alive(pid: int) -> bool:
    fields = h._stat_fields(pid)
    return fields is not None and fields[0] != "Z"


class Clients:
    def __init__(self, port: int, n: int) -> None:
        self.port, self.stop = port, threading.Event()
        self.results: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            conn = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=20)
            try:
                conn.request("GET", "/", headers={"Host": "example.com"})
                resp = conn.getresponse()
                resp.read()
                outcome = "ok" if resp.status == 200 else f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            finally:
                conn.close()
            with self.lock:
                self.results.append((began, outcome))


def slot_requests(admin_port: int, slot: str = "0") -> float:
    text = h.http_get(admin_port, "/metrics", 2.0)[1].decode()
    m = re.search(rf'^fluxgate_worker_requests_total\{{worker="{slot}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def run(args, workdir: Path) -> int:
    up_port = h.free_ports(1)[0]
    h.start_nginx("upstream", workdir / "upstream", h.nginx_upstream_conf(workdir / "upstream", up_port), up_port)
    fg = h.Fluxgate(workdir, args.workers, up_port, tag="kill",
                    env={"FLUXGATE_ACCESS_LOG": "off", "FLUXGATE_SHUTDOWN_DELAY_SECONDS": "0"})
    fg.start()
    clients = Clients(fg.listen_port, args.clients)
    serving_short = 0.0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal serving_short
        last = time.monotonic()
        while not sampling.is_set():
            time.sleep(0.02)
            now = time.monotonic()
            try:
                workers = fg.debug_config()["workers"]
            except (OSError, h.HarnessError):
                continue
            if sum(1 for w in workers if w["alive"] and w["generation"]) < args.workers:
                serving_short += now - last
            last = now

    sampler = threading.Thread(target=sample, daemon=True)
    kills = []
    for t in clients.threads:
        t.start()
    sampler.start()
    try:
        time.sleep(1.0)
        for _ in range(args.kills):
            victim = fg.debug_config()["workers"][0]
            if victim["pid"] <= 0:
                raise h.HarnessError(f"slot 0 has no worker: {victim}")
            sent = time.monotonic()
            os.kill(victim["pid"], signal.SIGKILL)
            while alive(victim["pid"]):
                time.sleep(0.002)
            dead = time.monotonic()
            before = slot_requests(fg.admin_port)
            back = served = None
            while time.monotonic() < dead + 30 and served is None:
                w = fg.debug_config()["workers"][0]
                if back is None and w["pid"] not in (0, victim["pid"]) and w["alive"]:
                    back = time.monotonic()
                if slot_requests(fg.admin_port) > before:
                    served = time.monotonic()
                time.sleep(0.01)
            kills.append({"sent": sent, "dead": dead, "respawned_s": round(back - dead, 3) if back else None,
                          "served_s": round(served - dead, 3) if served else None})
            time.sleep(max(0.0, sent + args.every - time.monotonic()))
        time.sleep(1.0)
    finally:
        clients.stop.set()
        sampling.set()
        for t in clients.threads:
            t.join(30)
        sampler.join(5)
    results = clients.results
    failed = [(t, o) for t, o in results if o != "ok"]
    in_hand = [f for f in failed if any(k["sent"] - 0.5 < f[0] < k["dead"] for k in kills)]
    after = [f for f in failed if f not in in_hand]
    print(f"# worker_kill: {args.workers} workers, {args.clients} clients (a new connection per request), "
          f"{args.kills} SIGKILLs {args.every:g} s apart")
    print(h.machine_note())
    for i, k in enumerate(kills, 1):
        print(f"kill {i}: replacement running {k['respawned_s']} s after the death, "
              f"serving requests {k['served_s']} s after")
    print(f"fewer than {args.workers} workers serving: {serving_short:.2f} s in total")
    print(f"requests: {len(results)}, failed {len(failed)} "
          f"(connection begun while the killed worker lived: {len(in_hand)}; after its death: {len(after)})")
    kinds: dict[str, int] = {}
    for _, o in failed:
        kinds[o] = kinds.get(o, 0) + 1
    if kinds:
        print("failures by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    ok = not after and all(k["served_s"] is not None and k["served_s"] < 2.0 for k in kills)
    print("verdict: " + ("PASS" if ok else "FAIL") +
          " (no connection begun after a death fails; each replacement serves within 2 s)")
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs)")
    args = ap.parse_args(argv)
    if args.kills < 1 or args.every <= 0 or args.clients < 1 or args.workers < 1:
        ap.error("--kills, --clients and --workers must be at least 1, --every positive")
    return h.run_in_workdir(run, args, "fluxgate-kill-")


if __name__ == "__main__":
    sys.exit(main())
