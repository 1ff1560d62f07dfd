"""SIGTERM: /readyz fails first, listeners stay open for the shutdown delay with
every response closing its connection, in-flight requests finish, then the drain."""

from __future__ import annotations

import http.client
import signal
import threading
import time

from tests.e2e.gateway import objects, request, route, write_config


def test_sigterm_fails_readyz_first_keeps_serving_with_connection_close_and_loses_nothing(
        tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port]}, [route("r", [{"backendRefs": [{"name": "a", "port": 80}]}])]))
    gw = gateway_factory(cfg, FLUXGATE_SHUTDOWN_DELAY_SECONDS="1.5", FLUXGATE_DRAIN_SECONDS="10")
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    kept.request("GET", "/", headers={"Host": "example.com"})
    first = kept.getresponse()
    first.read()
    assert first.status == 200 and first.getheader("connection") != "close"

    slow: dict = {}

    def in_flight():  # under way when SIGTERM comes, answered 2.5 s later: after the delay
        slow["status"] = request(port, "/", headers={"x-echo-delay": "2.5"}, timeout=15)[0]

    t = threading.Thread(target=in_flight)
    t.start()
    time.sleep(0.3)
    gw.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    while gw.admin("/readyz")[0] != 503:
        assert time.monotonic() < deadline, "/readyz did not fail after SIGTERM"
        time.sleep(0.02)
    assert gw.admin("/readyz")[2] == b"shutting down\n" and gw.admin("/healthz")[0] == 200

    # A kept-alive client's next request is served, and told to close.
    kept.request("GET", "/", headers={"Host": "example.com"})
    resp = kept.getresponse()
    resp.read()
    assert resp.status == 200 and resp.getheader("connection") == "close"
    # A new client during the delay is still accepted, and told the same.
    status, headers, _ = request(port, "/")
    assert status == 200 and headers["connection"] == "close"

    t.join(15)
    assert slow == {"status": 200}  # in flight across the delay and the drain: finished
    assert gw.proc.wait(15) == 0
    assert "shutting down" in gw.log()
