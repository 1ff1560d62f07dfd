"""The CORS filter and ExtensionRef filters through real workers."""

from __future__ import annotations

import pytest

from tests.e2e.gateway import echoed, objects, request, route, write_config

_POLICY = {
    "allowOrigins": ["https://www.foo.com", "https://*.bar.com"],
    "allowMethods": ["GET", "OPTIONS"],
    "allowHeaders": ["x-header-1", "x-header-2"],
    "exposeHeaders": ["x-header-3", "x-header-4"],
    "allowCredentials": True,
    "maxAge": 3600,
}


def _rule(path: str, filters: list) -> dict:
    return {"matches": [{"path": {"type": "PathPrefix", "value": path}}], "filters": filters,
            "backendRefs": [{"name": "a", "port": 80}]}


@pytest.fixture
def gw(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port]}, [route("cors", [
        _rule("/cors-1", [{"type": "CORS", "cors": _POLICY}]),
        _rule("/cors-any", [{"type": "CORS", "cors": {"allowOrigins": ["*"], "allowMethods": ["*"],
                                                       "allowHeaders": ["*"]}}]),
        _rule("/ext", [{"type": "ExtensionRef",
                        "extensionRef": {"group": "example.com", "kind": "Magic", "name": "m"}}]),
    ])]))
    return gateway_factory(cfg)


def _preflight(port, path, origin, method="GET", headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return request(port, path, method="OPTIONS", headers=h)


def test_cors_preflight_from_an_allowed_origin_is_answered_by_the_gateway(gw, port):
    for origin in ("https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"):
        status, headers, body = _preflight(port, "/cors-1", origin, headers="x-header-1, x-header-2")
        assert status == 200 and body == b""  # not forwarded: the echo backend would answer a report
        assert headers["access-control-allow-origin"] == origin
        assert headers["access-control-allow-methods"] == "GET, OPTIONS"
        assert headers["access-control-allow-headers"] == "x-header-1, x-header-2"
        assert headers["access-control-expose-headers"] == "x-header-3, x-header-4"
        assert headers["access-control-max-age"] == "3600"
        assert headers["access-control-allow-credentials"] == "true"
        assert headers["vary"] == "origin"


def test_cors_preflight_from_another_origin_gets_no_allow_origin(gw, port):
    for origin in ("https://foobar.com", "http://www.foo.com", "https://bar.com", "https://www.foo.com:8443"):
        status, headers, _ = _preflight(port, "/cors-1", origin)
        assert status == 200 and "access-control-allow-origin" not in headers


def test_cors_actual_request_gets_the_headers_and_reaches_the_backend(gw, port):
    status, headers, body = request(port, "/cors-1", headers={"Origin": "https://www.foo.com"})
    assert status == 200 and echoed(body)["url"] == "/cors-1"
    assert headers["access-control-allow-origin"] == "https://www.foo.com"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-expose-headers"] == "x-header-3, x-header-4"
    status, headers, _ = request(port, "/cors-1", headers={"Origin": "https://foobar.com"})
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = request(port, "/cors-1")  # no Origin: not a CORS request
    assert "access-control-allow-origin" not in headers


def test_cors_wildcards_echo_what_the_preflight_asks_for(gw, port):
    status, headers, _ = _preflight(port, "/cors-any", "https://foobar.com:12345", "PUT", "x-a, x-b")
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://foobar.com:12345"
    assert headers["access-control-allow-methods"] == "PUT"
    assert headers["access-control-allow-headers"] == "x-a, x-b"
    assert "access-control-allow-credentials" not in headers


def test_options_without_a_request_method_is_forwarded(gw, port):
    status, _, body = request(port, "/cors-1", method="OPTIONS", headers={"Origin": "https://www.foo.com"})
    assert status == 200 and echoed(body)["method"] == "OPTIONS"


def test_extension_ref_filter_answers_500_never_skipped(gw, port):
    status, _, body = request(port, "/ext")
    assert status == 500 and b"no backend" in body
