"""Drift and table integrity: a worker that serves another table than the
published one is recycled one at a time with no failed request; damaged
table bytes are never served and the control process republishes."""

from __future__ import annotations

import mmap
import os
import re
import signal
import time

from tests.e2e.gateway import objects, request, route, write_config
from tests.e2e.test_worker_loss import Load


def _docs(port, echo, marker: str):
    return objects(port, {"a": [echo.port]}, [
        route("r", [{"backendRefs": [{"name": "a", "port": 80}]}], hostnames=["example.com"]),
        route("b", [{"matches": [{"path": {"type": "PathPrefix", "value": marker}}],
                     "backendRefs": [{"name": "a", "port": 80}]}], hostnames=["b.example.com"]),
    ])


def _metric(gw, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", gw.admin("/metrics")[2].decode(), re.M)
    return float(m.group(1)) if m else 0.0


def test_drifting_workers_are_recycled_one_at_a_time_with_no_failed_request(
        tmp_path, gateway_factory, echo_factory, port):
    echo = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, _docs(port, echo, "/one"))
    # Drift is found after 1 s; a stopped worker is not declared hung meanwhile.
    gw = gateway_factory(cfg, FLUXGATE_DRIFT_SECONDS="1", FLUXGATE_HEARTBEAT_TIMEOUT="120",
                         FLUXGATE_DRAIN_SECONDS="20")
    stopped = gw.worker_pids()
    generation = gw.debug_config()["generation"]
    seen_busy = []  # slots with a successor or a retiring worker, sampled
    with Load(port, clients=4) as load:
        time.sleep(0.5)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)  # alive, but it will not take the next table
        resumed: set[int] = set()
        try:
            write_config(cfg, _docs(port, echo, "/two"))
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                workers = gw.debug_config()["workers"]
                busy = [w["index"] for w in workers if w["successor"] or w["retiring"]]
                seen_busy.append(busy)
                for w in workers:
                    # Replaced: let the old one run again, so it drains its requests.
                    if w["retiring"] in stopped and w["retiring"] not in resumed:
                        os.kill(w["retiring"], signal.SIGCONT)
                        resumed.add(w["retiring"])
                if (_metric(gw, "fluxgate_drift_recycles_total") == 2
                        and all(w["pid"] not in stopped and w["generation"] > generation and not w["retiring"]
                                for w in workers)):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"not recycled: {gw.debug_config()['workers']}\n{gw.log()[-4000:]}")
        finally:
            for pid in stopped:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        time.sleep(0.5)
    assert load.failures() == [], (load.failures()[:5], gw.log()[-6000:])
    assert len(load.results) > 100
    assert max(len(b) for b in seen_busy) == 1, "two recycles at once"
    assert all(w["alive"] for w in gw.debug_config()["workers"])
    assert request(port, "/two/x", host="b.example.com")[0] == 200
    for pid in stopped:  # drained and gone, not killed by the supervisor
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert "worker did not drain in time" not in gw.log()


def _slot_files(shard: str) -> list[str]:
    return [f"/dev/shm/{n}" for n in os.listdir("/dev/shm")
            if re.fullmatch(re.escape(f"fluxgate.{shard}.") + r"\d+\.\d+", n)]


def _serving(tmp_path, gateway_factory, echo_factory, port):
    """A gateway serving example.com and b.example.com/only-b; and its generation."""
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, _docs(port, echo_factory("a"), "/only-b"))
    gw = gateway_factory(cfg)
    return gw, gw.debug_config()["generation"]


def _damage(gw) -> int:
    """Turn "/only-b" into "/Xnly-b" (a route the config never had) in every
    ring slot holding it; returns how many slots were damaged."""
    damaged = 0
    for path in _slot_files(gw.env["FLUXGATE_SHARD"]):
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            at = m.find(b"/only-b")
            if at >= 0:
                m[at + 1:at + 2] = b"X"
                damaged += 1
    return damaged


def test_a_damaged_virtual_host_is_never_served_and_the_table_is_republished(
        tmp_path, gateway_factory, echo_factory, port):
    gw, generation = _serving(tmp_path, gateway_factory, echo_factory, port)
    assert request(port, "/x")[0] == 200  # example.com decoded; b.example.com not yet
    # Damage one byte of the b.example.com route in every slot that holds it,
    # as a stray write into shared memory would.
    assert _damage(gw) >= 1
    # Never served from the damaged bytes: 503 until the republished table, then 200.
    statuses = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert request(port, "/Xnly-b", host="b.example.com")[0] != 200
        status = request(port, "/only-b", host="b.example.com")[0]
        statuses.append(status)
        if status == 200 and gw.debug_config()["generation"] > generation:
            break
        time.sleep(0.02)
    assert statuses[-1] == 200, statuses
    assert 503 in statuses, statuses  # the damage was found (not left to chance)
    assert set(statuses) <= {200, 503}, statuses
    assert _metric(gw, "fluxgate_table_integrity_errors_total") >= 1
    gw.wait_generation(generation + 1)
    # The new generation's bytes are intact (written from the control's own copy):
    # every worker serves the route on fresh connections.
    assert [request(port, "/only-b", host="b.example.com")[0] for _ in range(20)] == [200] * 20
    assert gw.log().count("checksum mismatch") <= 4, "rate-limited"
    assert request(port, "/x")[0] == 200


def test_a_new_worker_that_finds_the_slot_damaged_gets_a_republished_table(
        tmp_path, gateway_factory, echo_factory, port):
    gw, generation = _serving(tmp_path, gateway_factory, echo_factory, port)
    victim = gw.worker_pids()[0]
    assert _damage(gw) >= 1
    os.kill(victim, signal.SIGKILL)  # its replacement verifies the whole slot: a mismatch
    # Not left serving nothing: the control process publishes again and it serves.
    gw.wait_generation(generation + 1, timeout=15)
    gw.wait_ready(timeout=15)
    assert victim not in gw.worker_pids()
    assert _metric(gw, "fluxgate_table_integrity_errors_total") >= 1
    assert [request(port, "/only-b", host="b.example.com")[0] for _ in range(10)] == [200] * 10
