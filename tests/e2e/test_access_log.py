"""The access log and request ids, through real workers."""

from __future__ import annotations

import json
import time

from tests.e2e.gateway import echoed, objects, request, route, write_config


def _gateway(tmp_path, gateway_factory, echo_factory, port, **env):
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port]}, [route("shop", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/shop"}}], "backendRefs": [{"name": "a", "port": 80}]}])]))
    log = tmp_path / "access.log"
    return gateway_factory(cfg, FLUXGATE_ACCESS_LOG=str(log), **env), log


def _lines(log, n: int, timeout: float = 10.0) -> list[dict]:
    """The first ``n`` lines of the log, once written (the writer thread batches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            lines = [json.loads(x) for x in log.read_text().splitlines()]
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} access log lines: {log.read_text() if log.exists() else 'no file'}")


def _upstream_saw(body: bytes, name: str) -> list[str]:
    return [v for k, v in echoed(body)["headers"] if k.lower() == name]


def test_access_log_has_one_line_per_request_without_the_query(tmp_path, gateway_factory, echo_factory, port):
    gw, log = _gateway(tmp_path, gateway_factory, echo_factory, port)
    status, headers, body = request(port, "/shop/cart?token=hunter2", headers={"User-Agent": "probe/1.0"})
    assert status == 200
    assert request(port, "/nowhere")[0] == 404
    first, second = sorted(_lines(log, 2), key=lambda x: x["status"])
    assert first["path"] == "/shop/cart" and "hunter2" not in json.dumps(first)
    assert (first["method"], first["status"], first["route"], first["gateway"]) == ("GET", 200, "default/shop",
                                                                                    "default/gw")
    assert first["client_ip"] == "127.0.0.1" and first["user_agent"] == "probe/1.0"
    assert first["upstream"].startswith("127.0.0.1:") and first["upstream_ms"] > 0
    assert first["bytes"] > len(body) and first["duration_ms"] >= first["upstream_ms"]
    assert first["time"].endswith("Z") and first["trace_id"] == ""
    # One id, everywhere: the response, the upstream's request, the log line.
    assert headers["x-request-id"] == first["request_id"] == _upstream_saw(body, "x-request-id")[0]
    assert (second["path"], second["route"], second["upstream"]) == ("/nowhere", "", "")
    assert len(_lines(log, 2)) == 2  # no more lines than requests


def test_access_log_keeps_the_query_when_asked_and_samples_2xx(tmp_path, gateway_factory, echo_factory, port):
    gw, log = _gateway(tmp_path, gateway_factory, echo_factory, port,
                       FLUXGATE_ACCESS_LOG_QUERY="true", FLUXGATE_ACCESS_LOG_SAMPLE_2XX="0")
    for _ in range(5):
        assert request(port, "/shop?a=1")[0] == 200  # sampled out, all of them
    assert request(port, "/nowhere?b=2")[0] == 404  # other statuses always logged
    (line,) = _lines(log, 1)
    time.sleep(0.3)
    assert len(_lines(log, 1)) == 1
    assert line["path"] == "/nowhere?b=2" and line["status"] == 404


def test_request_id_is_kept_when_valid_and_made_otherwise(tmp_path, gateway_factory, echo_factory, port):
    gw, log = _gateway(tmp_path, gateway_factory, echo_factory, port)
    status, headers, body = request(port, "/shop", headers={"X-Request-Id": "client-chose-this"})
    assert headers["x-request-id"] == "client-chose-this"
    assert _upstream_saw(body, "x-request-id") == ["client-chose-this"]
    for bad in ("x" * 129, "tab\there"):
        status, headers, body = request(port, "/shop", headers={"X-Request-Id": bad})
        assert status == 200 and headers["x-request-id"] != bad
        assert _upstream_saw(body, "x-request-id") == [headers["x-request-id"]]  # replaced, not both
    made = {request(port, "/shop")[1]["x-request-id"] for _ in range(40)}
    assert len(made) == 40  # unique, over both workers


def test_error_bodies_say_the_request_id(tmp_path, gateway_factory, echo_factory, port):
    gw, log = _gateway(tmp_path, gateway_factory, echo_factory, port)
    status, headers, body = request(port, "/nowhere")
    assert status == 404
    assert f"request id: {headers['x-request-id']}".encode() in body
