"""The supervisor: crashed and hung workers are replaced; SIGTERM drains."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from tests.e2e.gateway import echoed, objects, request, route, write_config


def _simple(tmp_path, port, echo):
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [echo.port]}, [route("r", [{"backendRefs": [{"name": "a", "port": 80}]}])]))
    return cfg


def _wait(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def test_supervisor_replaces_a_crashed_worker(tmp_path, gateway_factory, echo_factory, port):
    gw = gateway_factory(_simple(tmp_path, port, echo_factory("a")))
    before = gw.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    after = _wait(lambda: (p := gw.worker_pids()) and before[0] not in p and len(p) == 2 and p, what="replacement")
    gw.wait_ready()
    assert before[1] in after
    assert gw.debug_config()["workers"][0]["restarts"] == 1
    assert request(port)[0] == 200


def test_supervisor_kills_and_replaces_a_hung_worker(tmp_path, gateway_factory, echo_factory, port):
    gw = gateway_factory(_simple(tmp_path, port, echo_factory("a")), FLUXGATE_HEARTBEAT_TIMEOUT="1")
    hung = gw.worker_pids()[0]
    os.kill(hung, signal.SIGSTOP)  # alive but silent: only the heartbeat tells
    try:
        _wait(lambda: hung not in gw.worker_pids() and len(gw.worker_pids()) == 2, what="hung worker replaced")
    finally:
        try:
            os.kill(hung, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "hung" in gw.log()
    gw.wait_ready()
    assert request(port)[0] == 200


def test_supervisor_sigterm_finishes_in_flight_requests_then_exits(tmp_path, gateway_factory, echo_factory, port):
    gw = gateway_factory(_simple(tmp_path, port, echo_factory("a")), FLUXGATE_DRAIN_SECONDS="10")
    result = {}

    def slow():
        result["r"] = request(port, "/slow", headers={"x-echo-delay": "1.0"})

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)  # the request is in flight upstream
    gw.proc.send_signal(signal.SIGTERM)
    t.join(15)
    status, headers, body = result["r"]
    assert status == 200 and echoed(body)["url"] == "/slow"
    assert headers.get("connection") == "close"
    assert gw.proc.wait(15) == 0
    # Stopped accepting: nothing listens on the port any more.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_supervisor_drain_deadline_cuts_requests_that_take_too_long(tmp_path, gateway_factory, echo_factory, port):
    gw = gateway_factory(_simple(tmp_path, port, echo_factory("a")), FLUXGATE_DRAIN_SECONDS="0.5")
    errors = []

    def slow():
        try:
            request(port, "/slow", headers={"x-echo-delay": "30"}, timeout=60)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    gw.proc.send_signal(signal.SIGTERM)
    # Exits long before the upstream (30 s) would answer...
    assert gw.proc.wait(15) == 0
    t.join(15)
    # ...and the request was cut (a closed connection, not a client time-out).
    assert len(errors) == 1 and not isinstance(errors[0], TimeoutError), errors


def test_supervisor_death_makes_workers_exit_instead_of_serving_forever(tmp_path, gateway_factory, echo_factory, port):
    gw = gateway_factory(_simple(tmp_path, port, echo_factory("a")), FLUXGATE_DRAIN_SECONDS="1")
    workers = gw.worker_pids()
    os.kill(gw.proc.pid, signal.SIGKILL)  # no drain, no clean-up: the pipe's EOF is all they get
    gw.proc.wait(10)

    def gone():
        alive = []
        for pid in workers:
            try:
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except (ProcessLookupError, FileNotFoundError):
                pass
        return not alive

    try:
        _wait(gone, timeout=15, what="orphaned workers exit")
    finally:
        for pid in workers:  # never leave one behind, even when the test fails
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # A killed control process cleans nothing: remove its ring ourselves.
        prefix = f"fluxgate.{gw.env['FLUXGATE_SHARD']}."
        for name in os.listdir("/dev/shm"):
            if name.startswith(prefix):
                os.unlink(os.path.join("/dev/shm", name))
