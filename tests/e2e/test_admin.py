"""The admin server: probes, the live table, status and metrics."""

from __future__ import annotations

import json

from tests.e2e.gateway import echoed, objects, request, route, write_config


def test_admin_serves_probes_live_table_status_and_metrics(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port]}, [route("r", [
        {"matches": [{"path": {"type": "Exact", "value": "/x"}}], "backendRefs": [{"name": "a", "port": 80}]}])]))
    gw = gateway_factory(cfg)
    assert gw.admin("/healthz")[0] == 200
    assert gw.admin("/readyz")[0] == 200
    for _ in range(3):
        assert request(port, "/x")[0] == 200

    live = gw.debug_config()
    assert live["generation"] == 1 and isinstance(live["checksum"], int) and live["checksum"]
    assert [w["generation"] for w in live["workers"]] == [1, 1]
    listener = live["table"]["listeners"][0]
    assert listener["port"] == port
    vhost = live["table"]["vhosts"][0]
    assert vhost["entries"][0]["match"]["path"] == {"type": "Exact", "value": "/x"}
    assert live["table"]["clusters"][0]["endpoints"] == [{"address": "127.0.0.1", "port": a.port}]

    status = json.loads(gw.admin("/debug/status")[2])
    kinds = {o["kind"] for o in status["objects"]}
    assert {"Gateway", "HTTPRoute"} <= kinds

    code, headers, body = gw.admin("/metrics")
    text = body.decode()
    assert code == 200 and "fluxgate_table_generation 1.0" in text
    assert 'fluxgate_workers{state="serving"} 2.0' in text
    assert gw.admin("/nope")[0] == 404


def test_admin_route_explainer_says_which_rule_and_backend_and_why(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port], "b": [b.port], "empty": []}, [
        route("canary", [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                                       "headers": [{"name": "x-env", "value": "canary"}]}],
                          "backendRefs": [{"name": "b", "port": 80}]}], hostnames=["shop.example.com"]),
        route("main", [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                        "backendRefs": [{"name": "a", "port": 80, "weight": 3},
                                        {"name": "empty", "port": 80, "weight": 1}]}],
              hostnames=["shop.example.com"]),
    ]))
    gw = gateway_factory(cfg)

    def ask(query: str) -> tuple[int, dict]:
        code, _, body = gw.admin("/debug/route?" + query)
        return code, json.loads(body)

    code, plain = ask("host=shop.example.com&path=/api/items%3Fid%3D1")
    assert code == 200
    answer = plain["listeners"][0]
    assert answer["host"] == "exact hostname shop.example.com"
    assert answer["route"]["rule"] == "HTTPRoute/default/main#0"
    assert answer["passed_over"] == [{"route": "HTTPRoute/default/canary#0", "why": "header x-env is missing"}]
    shares = {x["backend"]: (x["share"], x["answer"]) for x in answer["backends"]}
    assert shares == {"default/a:80": (0.75, "proxied"), "default/empty:80": (0.25, "503: no ready endpoint")}

    _, canary = ask("host=shop.example.com&path=/api&x-env=canary")
    assert canary["listeners"][0]["route"]["rule"] == "HTTPRoute/default/canary#0"
    # The explainer and the workers agree.
    assert echoed(request(port, "/api", host="shop.example.com", headers={"x-env": "canary"})[2])["backend"] == "b"

    # The path is normalised as a worker does before it matches.
    _, dotted = ask("host=shop.example.com&path=/other/%252e%252e/api/x")
    assert dotted["request"]["path"] == "/api/x"
    assert dotted["listeners"][0]["route"]["rule"] == "HTTPRoute/default/main#0"
    code, bad = ask("host=shop.example.com&path=/api/..;/x")
    assert code == 400 and "a worker answers 400" in bad["error"]

    _, other = ask("host=nowhere.example.com&path=/")
    assert other["listeners"][0]["answer"].startswith("404")
    assert ask("path=/")[0] == 400
