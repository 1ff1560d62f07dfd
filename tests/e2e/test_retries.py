"""Retries through real workers: HTTPRoute ``retry`` and FluxGateRoute ``retries``.

Each backend here is a whole echo process that always fails one way
(``--status 503``, ``--reset``, ``--delay``) or always answers; a Service
spans them with one EndpointSlice per process, so an attempt that lands on
the failing one must be retried on the other to succeed.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.gateway import echoed, request, write_config


def _objects(port: int, services: dict[str, list[int]], routes: list[dict]) -> list[dict]:
    out: list[dict] = [{
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "fluxgate", "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]},
    }]
    for name, ports in services.items():
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                    "spec": {"ports": [{"name": "http", "port": 80}]}})
        for i, p in enumerate(ports):
            out.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-{i}", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": p}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            })
    return out + routes


def _route(kind: str, rules: list[dict]) -> dict:
    group = "fluxgate.io/v1alpha3" if kind == "FluxGateRoute" else "gateway.networking.k8s.io/v1"
    return {"apiVersion": group, "kind": kind, "metadata": {"name": kind.lower(), "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}}


def _rule(path: str, service: str, **extra) -> dict:
    return {"matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"name": service, "port": 80}], **extra}


def _seen(backend) -> list[dict]:
    """What reached an echo backend (its /__echo/requests report)."""
    return json.loads(request(backend.port, "/__echo/requests")[2])


@pytest.fixture
def gw(tmp_path, gateway_factory, echo_factory, port):
    good = echo_factory("good")
    bad = echo_factory("bad", "--status", "503")
    reset = echo_factory("reset", "--reset")
    slow = echo_factory("slow", "--delay", "5")
    lone = echo_factory("lone", "--status", "503")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, _objects(port, {
        "flaky": [bad.port, good.port], "resets": [reset.port, good.port],
        "slowish": [slow.port, good.port], "broken": [lone.port],
    }, [
        _route("HTTPRoute", [
            _rule("/status", "flaky", retry={"codes": [503], "attempts": 1}),
            _rule("/no-retry", "flaky"),
            _rule("/slow", "slowish", retry={"codes": [504], "attempts": 1},
                  timeouts={"request": "3s", "backendRequest": "300ms"}),
            _rule("/broken", "broken", retry={"codes": [503], "attempts": 2, "backoff": "10ms"}),
        ]),
        _route("FluxGateRoute", [
            _rule("/reset", "resets", retries={"attempts": 1, "retryOn": ["reset"]}),
            _rule("/reset-5xx", "resets", retries={"attempts": 1, "retryOn": ["5xx"]}),
            _rule("/reset-no-policy", "resets"),
        ]),
    ]))
    g = gateway_factory(cfg)
    g.backends = {"good": good, "bad": bad, "reset": reset, "slow": slow, "lone": lone}
    return g


def test_retry_on_a_listed_status_reaches_the_healthy_endpoint(gw, port):
    # Round robin (from a random start per worker) sends some first attempts
    # to the failing endpoint; every one of them must be retried to success.
    answers = [request(port, "/status") for _ in range(12)]
    assert [status for status, _, _ in answers] == [200] * 12
    assert {echoed(body)["backend"] for _, _, body in answers} == {"good"}
    assert any(r["url"] == "/status" for r in _seen(gw.backends["bad"]))  # some attempts did fail


def test_without_retry_the_failing_endpoint_answers(gw, port):
    statuses = [request(port, "/no-retry")[0] for _ in range(12)]
    assert 503 in statuses and 200 in statuses


def test_retry_sends_the_request_body_again(gw, port):
    body = b"x" * 5000
    for _ in range(6):
        status, _, answer = request(port, "/status", method="POST", body=body)
        assert status == 200 and echoed(answer)["body_bytes"] == 5000
    failed = [r for r in _seen(gw.backends["bad"]) if r["method"] == "POST"]
    assert all(r["body_bytes"] == 5000 for r in failed)


def test_retries_used_up_pass_the_last_upstream_answer(gw, port):
    status, headers, _ = request(port, "/broken")
    assert status == 503 and headers["x-backend"] == "lone"  # the upstream's own 503, not ours
    assert sum(r["url"] == "/broken" for r in _seen(gw.backends["lone"])) == 3  # first try + 2 retries


def test_a_body_too_long_to_keep_is_not_retried(gw, port):
    status, headers, _ = request(port, "/broken", method="POST", body=b"y" * (100 * 1024))
    assert status == 503 and headers["x-backend"] == "lone"
    posts = [r for r in _seen(gw.backends["lone"]) if r["url"] == "/broken" and r["method"] == "POST"]
    assert len(posts) == 1


def test_per_try_timeout_is_retried_on_another_endpoint(gw, port):
    statuses = [request(port, "/slow")[0] for _ in range(8)]
    assert statuses == [200] * 8
    assert any(r["url"] == "/slow" for r in _seen(gw.backends["slow"]))


def test_fluxgateroute_retries_a_reset(gw, port):
    answers = [request(port, "/reset") for _ in range(10)]
    assert [s for s, _, _ in answers] == [200] * 10
    assert any(r["url"] == "/reset" for r in _seen(gw.backends["reset"]))


def test_retry_on_5xx_covers_a_reset(gw, port):
    # A reset would be answered 502: "5xx" retries it, as Envoy's 5xx does.
    statuses = [request(port, "/reset-5xx")[0] for _ in range(10)]
    assert statuses == [200] * 10


def test_a_reset_without_a_policy_is_answered_502(gw, port):
    statuses = [request(port, "/reset-no-policy")[0] for _ in range(12)]
    assert 502 in statuses and 200 in statuses
