"""No connection lost when a worker dies: the control process owns the listening
sockets, a replacement takes its slot's socket over at once (control/sockets.py,
control/supervisor.py)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
import time

from tests.e2e.gateway import objects, request, route, write_config


def _config(tmp_path, port, echo, extra_listener: int | None = None):
    cfg = tmp_path / "gw.yaml"
    docs = objects(port, {"a": [echo.port]}, [route("r", [{"backendRefs": [{"name": "a", "port": 80}]}])])
    if extra_listener is not None:
        gw = next(d for d in docs if d["kind"] == "Gateway")
        gw["spec"]["listeners"].append({"name": "extra", "port": extra_listener, "protocol": "HTTP"})
    write_config(cfg, docs)
    return cfg


def _slot_requests(gw) -> dict[str, float]:
    """fluxgate_worker_requests_total by slot (the dead worker's counts stay in its slot)."""
    text = gw.admin("/metrics")[2].decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^fluxgate_worker_requests_total\{worker="(\d+)"\} (\S+)$', text, re.M)}


def _alive(pid: int) -> bool:
    """Running (not reaped, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped (even while we read)
        return False


def _wait_serving(gw) -> dict:
    """Slot 0's worker once it runs and serves (never pid 0: kill(0) is the process group)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        w = gw.debug_config()["workers"][0]
        if w["pid"] > 0 and w["alive"] and w["generation"] > 0:
            return w
        time.sleep(0.02)
    raise AssertionError(f"slot 0 not serving: {gw.debug_config()['workers']}")


class Load:
    """Clients that each open a new connection per request, noting when each began."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.stop = threading.Event()
        self.results: list[tuple[float, str]] = []  # (connect started, "ok" or the error)
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                status = request(self.port, timeout=20)[0]
                outcome = "ok" if status == 200 else f"status {status}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.results.append((began, outcome))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def failures(self, after: float = 0.0) -> list[tuple[float, str]]:
        with self._lock:
            return [(t, o) for t, o in self.results if o != "ok" and t >= after]


def test_killed_worker_loses_no_queued_connection_and_its_replacement_serves_within_2s(
        tmp_path, gateway_factory, echo_factory, port):
    gw = gateway_factory(_config(tmp_path, port, echo_factory("a")))
    kills = []
    with Load(port, clients=4) as load:
        time.sleep(1.0)
        for _ in range(3):  # 2 s apart: the crash "loop" that is none
            victim = _wait_serving(gw)
            killed_at = time.monotonic()
            os.kill(victim["pid"], signal.SIGKILL)
            while _alive(victim["pid"]):  # dead for sure: it counts nothing from here on
                time.sleep(0.002)
            kills.append((killed_at, time.monotonic()))  # from its death on it accepts nothing
            before = _slot_requests(gw).get("0", 0.0)
            served_at = None
            while time.monotonic() < killed_at + 5:
                if _slot_requests(gw).get("0", 0.0) > before:
                    served_at = time.monotonic()
                    break
                time.sleep(0.05)
            assert served_at is not None, f"slot 0 served nothing within 5 s of the kill:\n{gw.log()[-3000:]}"
            # Counted by the replacement: the dead one counts nothing after its death.
            assert served_at - killed_at < 2.0, served_at - killed_at
            assert gw.debug_config()["workers"][0]["pid"] != victim["pid"]
            time.sleep(max(0.0, killed_at + 2.0 - time.monotonic()))
        time.sleep(0.5)
    # A connection begun after a worker's death waits in its queue for the
    # replacement (or goes to the other worker): none may fail. Before it died,
    # only the requests the killed worker had in hand can (one per client at most).
    # (A request takes about a millisecond: one begun 0.5 s before a kill is over.)
    late = [f for f in load.failures() if not any(sent - 0.5 < f[0] < dead for sent, dead in kills)]
    assert late == [], (late, kills, gw.log()[-8000:])
    assert len(load.failures()) <= 4 * len(kills), load.failures()
    assert len(load.results) > 200
    workers = gw.debug_config()["workers"]
    assert workers[0]["restarts"] == 3 and all(w["alive"] for w in workers)
    assert "restart_in_s=0.0" in gw.log() or '"restart_in_s": 0.0' in gw.log()


def test_a_new_listener_is_served_by_every_worker_without_dropping_open_connections(
        tmp_path, gateway_factory, echo_factory, port):
    echo = echo_factory("a")
    cfg = _config(tmp_path, port, echo)
    gw = gateway_factory(cfg)
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    kept.request("GET", "/", headers={"Host": "example.com"})
    assert kept.getresponse().read() is not None
    generation = gw.debug_config()["generation"]
    from tests.e2e.gateway import reserve_port
    extra, holder = reserve_port()
    try:
        _config(tmp_path, port, echo, extra_listener=extra)
        gw.wait_generation(generation + 1)
        # Every worker took the new port's socket: 20 new connections all served.
        statuses = [request(extra)[0] for _ in range(20)]
        assert statuses == [200] * 20, statuses
        per_worker = {w["index"]: w["requests"] for w in gw.debug_config()["workers"]}
        assert len(per_worker) == 2
        # The connection accepted before the change is still served.
        kept.request("GET", "/", headers={"Host": "example.com"})
        resp = kept.getresponse()
        assert resp.status == 200
        resp.read()
        # And removing the listener stops it (new connections refused) while the old port serves.
        _config(tmp_path, port, echo)
        gw.wait_generation(generation + 2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                request(extra, timeout=2)
            except ConnectionRefusedError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the removed listener still accepts")
        assert request(port)[0] == 200
    finally:
        kept.close()
        holder.close()


def test_a_port_the_control_process_cannot_bind_is_logged_and_counted(
        tmp_path, gateway_factory, echo_factory, port):
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()  # no SO_REUSEPORT: nobody else may bind it
    try:
        gw = gateway_factory(_config(tmp_path, port, echo_factory("a"), extra_listener=taken.getsockname()[1]))
        assert request(port)[0] == 200  # the other listener serves
        assert "cannot bind listener" in gw.log()
        assert re.search(r"^fluxgate_listeners_unbound 1\.0$", gw.admin("/metrics")[2].decode(), re.M)
    finally:
        taken.close()
