"""Gateways and listeners through real workers: addresses, shared ports, hostnames."""

from __future__ import annotations

from tests.e2e.gateway import echoed, objects, request, write_config


def _gateway(name: str, listeners: list[dict], addresses: list[str] | None = None) -> dict:
    spec: dict = {"gatewayClassName": "fluxgate", "listeners": listeners}
    if addresses:
        spec["addresses"] = [{"type": "IPAddress", "value": a} for a in addresses]
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def _route(name: str, parent: dict, backend: str) -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": [parent], "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}}


def _services(echoes) -> list[dict]:
    # objects() builds Services and EndpointSlices; drop its Gateway (the first doc).
    return objects(1, {e.name: [e.port] for e in echoes}, [])[1:]


def test_gateways_on_different_addresses_share_a_port(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    cfg = tmp_path / "gw.yaml"
    http = [{"name": "http", "protocol": "HTTP", "port": port}]
    write_config(cfg, [
        _gateway("one", http, ["127.0.0.1"]), _gateway("two", http, ["127.0.0.2"]),
        _route("to-a", {"name": "one"}, "a"), _route("to-b", {"name": "two"}, "b"),
        *_services([a, b]),
    ])
    gateway_factory(cfg)
    import http.client
    for address, want in (("127.0.0.1", "a"), ("127.0.0.2", "b")):
        conn = http.client.HTTPConnection(address, port, timeout=10)
        conn.request("GET", "/", headers={"Host": "x"})
        assert echoed(conn.getresponse().read())["backend"] == want
        conn.close()


def test_gateways_listeners_on_one_port_are_told_apart_by_hostname(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, [
        _gateway("gw", [
            {"name": "a", "protocol": "HTTP", "port": port, "hostname": "a.example.com"},
            {"name": "b", "protocol": "HTTP", "port": port, "hostname": "*.b.example.com"},
        ]),
        _route("to-a", {"name": "gw", "sectionName": "a"}, "a"),
        _route("to-b", {"name": "gw", "sectionName": "b"}, "b"),
        *_services([a, b]),
    ])
    gateway_factory(cfg)
    assert echoed(request(port, host="a.example.com")[2])["backend"] == "a"
    assert echoed(request(port, host="x.b.example.com")[2])["backend"] == "b"
    assert request(port, host="b.example.com")[0] == 404  # "*.b" does not match the bare name
    assert request(port, host="other.example.com")[0] == 404
