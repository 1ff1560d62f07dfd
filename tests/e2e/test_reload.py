"""Hot reload in file mode: edits become generations; bad edits lose nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from tests.e2e.gateway import echoed, objects, request, route, write_config


def _routes(backend: str, extra_path: str | None = None):
    rules = [{"backendRefs": [{"name": backend, "port": 80}]}]
    if extra_path:
        rules.insert(0, {"matches": [{"path": {"type": "PathPrefix", "value": extra_path}}],
                         "backendRefs": [{"name": "b", "port": 80}]})
    return [route("r", rules)]


def test_reload_edit_becomes_a_new_generation_in_every_worker(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    cfg = tmp_path / "gw.yaml"
    backends = {"a": [a.port], "b": [b.port]}
    write_config(cfg, objects(port, backends, _routes("a")))
    gw = gateway_factory(cfg)
    gen = gw.debug_config()["generation"]
    assert echoed(request(port, "/new")[2])["backend"] == "a"
    write_config(cfg, objects(port, backends, _routes("a", extra_path="/new")))
    gw.wait_generation(gen + 1)
    # Every worker serves it: many connections land on both workers.
    assert {echoed(request(port, "/new")[2])["backend"] for _ in range(20)} == {"b"}


def test_reload_file_that_does_not_parse_keeps_the_last_good_table(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port]}, _routes("a")))
    gw = gateway_factory(cfg)
    gen = gw.debug_config()["generation"]
    cfg.write_text("apiVersion: v1\nkind: [unclosed\n")
    deadline = time.monotonic() + 5
    while "config rejected" not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "config rejected" in gw.log() and "gw.yaml" in gw.log()
    assert gw.debug_config()["generation"] == gen  # nothing published
    assert echoed(request(port, "/")[2])["backend"] == "a"


def test_reload_invalid_object_is_rejected_alone(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    cfg = tmp_path / "gw.yaml"
    good = objects(port, {"a": [a.port], "b": [b.port]}, _routes("a", extra_path="/b"))
    write_config(cfg, good)
    gw = gateway_factory(cfg)
    gen = gw.debug_config()["generation"]
    bad_route = route("broken", [{"matches": [{"path": {"type": "PathPrefix", "value": "no-slash"}}],
                                  "backendRefs": [{"name": "b", "port": 80}]}])
    extra = route("extra", [{"matches": [{"path": {"type": "Exact", "value": "/extra"}}],
                             "backendRefs": [{"name": "b", "port": 80}]}])
    write_config(cfg, good + [bad_route, extra])
    gw.wait_generation(gen + 1)
    assert "broken" in gw.log()
    assert echoed(request(port, "/extra")[2])["backend"] == "b"  # the valid newcomer serves
    assert echoed(request(port, "/b/x")[2])["backend"] == "b"
    assert echoed(request(port, "/")[2])["backend"] == "a"


def test_reload_sighup_rereads_the_config(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port]}, _routes("a")))
    gw = gateway_factory(cfg, FLUXGATE_WATCH_INTERVAL="60")  # polling will not see edits
    gen = gw.debug_config()["generation"]
    os.kill(gw.proc.pid, signal.SIGHUP)
    gw.wait_generation(gen + 1)
    assert "SIGHUP" in gw.log()


def test_reload_under_load_fails_no_request(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    cfg = tmp_path / "gw.yaml"
    backends = {"a": [a.port], "b": [b.port]}
    write_config(cfg, objects(port, backends, _routes("a")))
    gw = gateway_factory(cfg)
    failures: list[str] = []
    done = threading.Event()
    count = [0]

    def load():
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not done.is_set():
            try:
                conn.request("GET", "/", headers={"Host": "x"})
                resp = conn.getresponse()
                resp.read()
                count[0] += 1
                if resp.status != 200:
                    failures.append(f"status {resp.status}")
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        gen = gw.debug_config()["generation"]
        for i in range(20):
            write_config(cfg, objects(port, backends, _routes("a", extra_path=f"/v{i}")))
            gen = gw.wait_generation(gen + 1)
    finally:
        done.set()
        for t in threads:
            t.join(10)
    assert failures == []
    assert count[0] > 100


def test_reload_keeps_open_connections_and_serves_them_the_new_table(tmp_path, gateway_factory, echo_factory, port):
    import http.client
    a, b = echo_factory("a"), echo_factory("b")
    cfg = tmp_path / "gw.yaml"
    backends = {"a": [a.port], "b": [b.port]}
    write_config(cfg, objects(port, backends, _routes("a")))
    gw = gateway_factory(cfg)
    gen = gw.debug_config()["generation"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/new", headers={"Host": "x"})
        first = conn.getresponse()
        assert echoed(first.read())["backend"] == "a"
        sock = conn.sock
        write_config(cfg, objects(port, backends, _routes("a", extra_path="/new")))
        gw.wait_generation(gen + 1)
        conn.request("GET", "/new", headers={"Host": "x"})
        second = conn.getresponse()
        assert echoed(second.read())["backend"] == "b"
        assert conn.sock is sock  # the same TCP connection
    finally:
        conn.close()


def test_reload_removing_a_listener_keeps_accepted_connections(tmp_path, gateway_factory, echo_factory, port):
    import http.client

    from tests.e2e.gateway import reserve_port
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    second_port, holder = reserve_port()
    try:
        docs = objects(port, {"a": [a.port]}, _routes("a"))
        docs[0]["spec"]["listeners"].append({"name": "extra", "protocol": "HTTP", "port": second_port})
        write_config(cfg, docs)
        gw = gateway_factory(cfg)
        gen = gw.debug_config()["generation"]
        conn = http.client.HTTPConnection("127.0.0.1", second_port, timeout=10)
        conn.request("GET", "/", headers={"Host": "x"})
        assert conn.getresponse().read()
        write_config(cfg, objects(port, {"a": [a.port]}, _routes("a")))  # "extra" is gone
        gw.wait_generation(gen + 1)
        # The accepted connection still gets an answer (the route is gone: 404)...
        conn.request("GET", "/", headers={"Host": "x"})
        assert conn.getresponse().status == 404
        conn.close()
        # ...while the first listener serves on, untouched.
        assert echoed(request(port, "/")[2])["backend"] == "a"
    finally:
        holder.close()


def _serving(tmp_path, gateway_factory, echo_factory, port):
    """A gateway serving backend "a" from gw.yaml: (config path, its objects, gateway, generation)."""
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    docs = objects(port, {"a": [a.port]}, _routes("a"))
    write_config(cfg, docs)
    gw = gateway_factory(cfg)
    return cfg, docs, gw, gw.debug_config()["generation"]


def test_reload_rejection_and_unserved_kind_are_warnings(tmp_path, gateway_factory, echo_factory, port):
    cfg, docs, gw, gen = _serving(tmp_path, gateway_factory, echo_factory, port)
    to_nowhere = route("nowhere", [{"matches": [{"path": {"type": "PathPrefix", "value": "/nowhere"}}],
                                    "backendRefs": [{"name": "missing", "port": 80}]}])
    policy = {"apiVersion": "fluxgate.io/v1alpha3", "kind": "FluxGatePolicy",
              "metadata": {"name": "limits", "namespace": "default"}, "spec": {}}
    write_config(cfg, docs + [to_nowhere, policy])
    gw.wait_generation(gen + 1)
    _until(lambda: "HTTPRoute default/nowhere" in gw.log())
    lines = gw.log().splitlines()
    [rejected] = [line for line in lines if "status: HTTPRoute default/nowhere" in line]
    assert " WARNING " in rejected and "ResolvedRefs=False" in rejected
    [unserved] = [line for line in lines if "FluxGatePolicy" in line]
    assert " WARNING " in unserved and "not enforced" in unserved
    assert echoed(request(port, "/")[2])["backend"] == "a"


def test_reload_document_without_identity_keeps_the_files_last_good_version(
        tmp_path, gateway_factory, echo_factory, port):
    # Defect 2: a Gateway without metadata.name (or a document that is a list)
    # used to remove every object of its file: the listener went away.
    cfg, good, gw, gen = _serving(tmp_path, gateway_factory, echo_factory, port)
    nameless = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {},
                "spec": {"gatewayClassName": "fluxgate", "listeners": []}}
    for n, bad in enumerate([nameless, ["a", "list"]], start=1):
        write_config(cfg, good + [bad])
        _until(lambda: _status(gw)["config_errors"])
        [error] = _status(gw)["config_errors"]
        assert str(cfg) in error and "(document" in error
        assert echoed(request(port, "/")[2])["backend"] == "a"  # the listener keeps serving
        assert gw.debug_config()["generation"] == gen  # nothing published
        metrics = gw.admin("/metrics")[2].decode()
        assert f'fluxgate_config_errors_total{{kind="",reason="identity"}} {float(n)}' in metrics
        write_config(cfg, good)
        _until(lambda: not _status(gw)["config_errors"])
        assert _status(gw)["config_errors"] == []
    assert "config rejected; keeping the last good version" in gw.log()
    assert echoed(request(port, "/")[2])["backend"] == "a"


def _until(predicate, timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true or ``timeout`` (the asserts after it say what failed)."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def _status(gw) -> dict:
    return json.loads(gw.admin("/debug/status")[2])
