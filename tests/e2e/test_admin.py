"""The admin server: probes, the live table, status and metrics."""

from __future__ import annotations

import json

from tests.e2e.gateway import objects, request, route, write_config


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
