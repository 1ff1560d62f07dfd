"""HTTPRoute filters through real workers: what the backend sees, what the client gets."""

from __future__ import annotations

import pytest

from tests.e2e.gateway import echoed, objects, request, route, write_config


def _rule(path: str, filters: list, match_type: str = "PathPrefix", backend: bool = True) -> dict:
    rule = {"matches": [{"path": {"type": match_type, "value": path}}], "filters": filters}
    if backend:
        rule["backendRefs"] = [{"name": "a", "port": 80}]
    return rule


@pytest.fixture
def gw(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port]}, [route("filters", [
        _rule("/headers", [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "X-Env", "value": "prod"}],
                "add": [{"name": "X-Added", "value": "1"}],
                "remove": ["X-Debug"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "set": [{"name": "Cache-Control", "value": "no-store"}],
                "add": [{"name": "X-Served-By", "value": "fluxgate"}],
                "remove": ["X-Backend"]}},
        ]),
        _rule("/old", [{"type": "RequestRedirect", "requestRedirect": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}], backend=False),
        _rule("/secure", [{"type": "RequestRedirect", "requestRedirect": {
            "scheme": "https", "hostname": "secure.example.com", "statusCode": 301}}], backend=False),
        _rule("/moved", [{"type": "RequestRedirect", "requestRedirect": {
            "port": 8443, "statusCode": 308, "path": {"type": "ReplaceFullPath", "replaceFullPath": "/here"}}}],
            backend=False),
        _rule("/api", [{"type": "URLRewrite", "urlRewrite": {
            "hostname": "internal.example.com",
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}}]),
        _rule("/full", [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplaceFullPath", "replaceFullPath": "/fixed"}}}]),
        {"backendRefs": [{"name": "a", "port": 80}]},
    ])]))
    return gateway_factory(cfg)


def test_filters_request_header_modifier_sets_adds_and_removes(gw, port):
    status, _, body = request(port, "/headers", headers={"X-Env": "dev", "X-Debug": "1", "X-Other": "kept"})
    seen = echoed(body)["headers"]
    names = [k.lower() for k, _ in seen]
    assert status == 200
    assert [v for k, v in seen if k.lower() == "x-env"] == ["prod"]  # replaced, not added
    assert ("X-Added", "1") in [tuple(h) for h in seen]
    assert "x-debug" not in names and ("X-Other", "kept") in [tuple(h) for h in seen]


def test_filters_response_header_modifier_edits_what_the_client_gets(gw, port):
    status, headers, _ = request(port, "/headers")
    assert status == 200
    assert headers["cache-control"] == "no-store" and headers["x-served-by"] == "fluxgate"
    assert "x-backend" not in headers


def test_filters_redirect_keeps_scheme_host_and_listener_port_by_default(gw, port):
    status, headers, body = request(port, "/old/page?q=1", host="shop.example.com")
    assert status == 302 and body == b""
    assert headers["location"] == f"http://shop.example.com:{port}/new/page?q=1"


def test_filters_redirect_to_https_uses_the_well_known_port(gw, port):
    status, headers, _ = request(port, "/secure/x", host=f"shop.example.com:{port}")
    assert status == 301
    assert headers["location"] == "https://secure.example.com/secure/x"


def test_filters_redirect_with_port_and_full_path(gw, port):
    status, headers, _ = request(port, "/moved/anything", host="shop.example.com")
    assert status == 308
    assert headers["location"] == "http://shop.example.com:8443/here"


def test_filters_url_rewrite_changes_path_prefix_and_host_upstream(gw, port):
    status, _, body = request(port, "/api/users?id=7", host="public.example.com")
    seen = echoed(body)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert status == 200
    assert seen["url"] == "/v2/users?id=7"
    assert headers["host"] == "internal.example.com"
    assert headers["x-forwarded-host"] == "public.example.com"  # the client's, unchanged


def test_filters_url_rewrite_full_path(gw, port):
    assert echoed(request(port, "/full/a/b?x=1")[2])["url"] == "/fixed?x=1"


def test_filters_do_not_touch_other_rules(gw, port):
    status, headers, body = request(port, "/plain", headers={"X-Debug": "1"})
    assert status == 200 and "x-backend" in headers
    assert ("X-Debug", "1") in [tuple(h) for h in echoed(body)["headers"]]


def test_filters_request_mirror_copies_requests_and_ignores_the_mirror(tmp_path, gateway_factory, echo_factory, port):
    import json
    import time
    a, shadow = echo_factory("a"), echo_factory("shadow")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port], "shadow": [shadow.port]}, [route("mirror", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/all"}}],
         "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}}}],
         "backendRefs": [{"name": "a", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/dead"}}],
         "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "gone", "port": 80}}}],
         "backendRefs": [{"name": "a", "port": 80}]},
    ])]))
    gateway_factory(cfg)
    # Every answer comes from the real backend, with the body intact.
    for i in range(5):
        status, headers, body = request(port, f"/all/{i}", method="POST", body=b"payload-%d" % i)
        assert status == 200 and headers["x-backend"] == "a" and echoed(body)["body"] == f"payload-{i}"
    # An unresolvable mirror is left out; the rule serves on.
    assert request(port, "/dead")[0] == 200

    def seen_by_shadow():
        return json.loads(request(shadow.port, "/__echo/requests")[2])

    deadline = time.monotonic() + 10
    while len(seen_by_shadow()) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    got = sorted((r["url"], r["body"]) for r in seen_by_shadow())
    assert got == [(f"/all/{i}", f"payload-{i}") for i in range(5)]


def test_filters_on_a_backend_apply_only_when_that_backend_is_chosen(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port], "b": [b.port]}, [route("split", [{
        "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "add": [{"name": "X-Rule", "value": "1"}]}}],
        "backendRefs": [
            {"name": "a", "port": 80, "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "X-To", "value": "a"}]}},
                {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "X-From", "value": "a"}]}}]},
            {"name": "b", "port": 80},
        ]}])]))
    gateway_factory(cfg)
    seen = set()
    for _ in range(40):
        _, headers, body = request(port, "/")
        report = echoed(body)
        sent = {k.lower(): v for k, v in report["headers"]}
        assert headers["x-rule"] == "1"  # the rule's filter, whichever backend
        if report["backend"] == "a":
            assert sent.get("x-to") == "a" and headers.get("x-from") == "a"
        else:
            assert "x-to" not in sent and "x-from" not in headers
        seen.add(report["backend"])
    assert seen == {"a", "b"}
