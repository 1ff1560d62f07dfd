"""Kubernetes mode end to end: ``fluxgate run --kubernetes`` against tests/kubeapi.

The API server is ``python -m tests.kubeapi`` (KubeAPIProcess), the gateway a
real process tree reading a kubeconfig that points at it, the backends echo
processes. Objects go in over the API (``/_kubeapi/apply`` or a DELETE), never
into the gateway. FLUXGATE_WATCH_INTERVAL is 30 s here, so a change served
within a second shows that watch events wake the control loop at once.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.gateway import echoed, free_port, objects, request, route
from tests.kubeapi import KubeAPIProcess

GATEWAY_CLASS = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
    "metadata": {"name": "fluxgate"},
    "spec": {"controllerName": "fluxgate.io/gateway-controller"},
}
KUBE_ENV = {"FLUXGATE_WATCH_INTERVAL": "30", "FLUXGATE_HOLDOFF_MS": "20"}


@pytest.fixture
def kubeapi_factory():
    started: list[KubeAPIProcess] = []

    def make(*args: str, port: int = 0) -> KubeAPIProcess:
        # Bookmarks only at the start of a watch, so tests decide when versions move.
        proc = KubeAPIProcess("--bookmark-interval", "60", *args, port=port).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def kubeapi(kubeapi_factory):
    return kubeapi_factory()


def write_kubeconfig(path: Path, port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "test", "user": {}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    return path


def start_gateway(gateway_factory, tmp_path: Path, port: int, wait: bool = True, **env: str):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", port)
    gw = gateway_factory(kubeconfig, args=["--kubernetes"], start=False,
                         FLUXGATE_KUBECONFIG=str(kubeconfig), **{**KUBE_ENV, **env})
    return gw.start(wait_ready=wait)


def api_delete(api: KubeAPIProcess, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request("DELETE", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def eventually(check, timeout: float = 5.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def backend_of(port: int, path: str = "/") -> str | int:
    """The echo backend's name, the status when it is not a 200, or the error."""
    try:
        status, _, body = request(port, path, timeout=2)
    except OSError as exc:
        return type(exc).__name__
    return echoed(body)["backend"] if status == 200 else status


def world(port: int, backends: dict[str, list[int]], routes: list[dict]) -> list[dict]:
    return [GATEWAY_CLASS, *objects(port, backends, routes)]


def web_route(name: str = "web", path: str = "/", backend: str = "a") -> dict:
    return route(name, [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                         "backendRefs": [{"name": backend, "port": 80}]}])


def test_kubernetes_applied_route_is_served_and_deletion_removes_it(
        tmp_path, kubeapi, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    gw = start_gateway(gateway_factory, tmp_path, kubeapi.port)
    assert not _listening(port)  # an empty cluster: no Gateway, no listener
    for obj in world(port, {"a": [a.port]}, [web_route()]):
        kubeapi.apply(obj)
    assert eventually(lambda: backend_of(port) == "a", what="the route to be served")
    assert f"kubernetes http://127.0.0.1:{kubeapi.port}" in gw.log()

    assert api_delete(kubeapi, "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/web") == 200
    assert eventually(lambda: backend_of(port) == 404, what="the deleted route to be gone")


def test_kubernetes_endpoint_change_reaches_workers_without_restart(
        tmp_path, kubeapi, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    for obj in world(port, {"a": [a.port]}, [web_route()]):
        kubeapi.apply(obj)
    gw = start_gateway(gateway_factory, tmp_path, kubeapi.port)
    assert backend_of(port) == "a"
    pids = sorted(gw.worker_pids())
    generation = gw.debug_config()["generation"]

    # A rolling update of the backend: the slice now lists the new pod only.
    moved = next(o for o in objects(port, {"a": [b.port]}, []) if o["kind"] == "EndpointSlice")
    started = time.monotonic()
    kubeapi.apply(moved)
    eventually(lambda: all(backend_of(port) == "b" for _ in range(4)), what="the new endpoint")
    # Far less than FLUXGATE_WATCH_INTERVAL: the event woke the loop.
    assert time.monotonic() - started < 2.0
    gw.wait_generation(generation + 1)
    assert sorted(gw.worker_pids()) == pids  # no worker restarted


def test_kubernetes_first_table_waits_for_the_initial_lists(
        tmp_path, kubeapi_factory, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    api_port = free_port()
    gw = start_gateway(gateway_factory, tmp_path, api_port, wait=False)
    # The API does not answer: the gateway retries, serves nothing, and says why.
    status, body = eventually(lambda: (r := _readyz(gw)) and "connection refused" in r[1] and r,
                              what="/readyz to say why")
    assert status == 503 and "waiting for the initial lists from the Kubernetes API" in body
    assert gw.debug_config()["generation"] == 0
    assert gw.proc.poll() is None

    # The API comes up with the whole world already in it.
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump_all(world(port, {"a": [a.port]}, [web_route()])))
    kubeapi_factory("--apply", str(seed), port=api_port)
    gw.wait_ready()
    # The very first table already had the endpoints: never a route without them.
    assert gw.debug_config()["generation"] == 1
    assert backend_of(port) == "a"


def test_kubernetes_watch_cut_mid_stream_recovers(
        tmp_path, kubeapi, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    for obj in world(port, {"a": [a.port], "b": [b.port]}, [web_route()]):
        kubeapi.apply(obj)
    gw = start_gateway(gateway_factory, tmp_path, kubeapi.port)
    assert backend_of(port) == "a"
    watches = eventually(lambda: kubeapi.watch_count, what="open watches")

    assert kubeapi.drop_watches() == watches  # cut every stream mid-way
    kubeapi.apply(web_route(name="v2", path="/v2", backend="b"))
    assert eventually(lambda: backend_of(port, "/v2") == "b", what="the route applied after the cut")
    eventually(lambda: kubeapi.watch_count >= watches, what="the watches to be back")
    assert gw.proc.poll() is None


def test_kubernetes_expired_history_recovers_by_relisting(
        tmp_path, kubeapi, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    for obj in world(port, {"a": [a.port], "b": [b.port]}, [web_route()]):
        kubeapi.apply(obj)
    gw = start_gateway(gateway_factory, tmp_path, kubeapi.port, FLUXGATE_LOG_LEVEL="info")
    assert backend_of(port) == "a"
    # Every watch open first (one opened later would start at the newer version).
    watches = len(gw.debug_config()["watches"])
    eventually(lambda: kubeapi.watch_count >= watches, what="every watch open")

    # Move the global version past every watch's, forget the history, cut the streams:
    # each watch resumes from a version the server no longer has (ERROR 410).
    kubeapi.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unwatched"}})
    kubeapi.compact()
    kubeapi.drop_watches()
    kubeapi.apply(web_route(backend="b"))  # only a re-list (or a watch after it) can carry this
    assert eventually(lambda: backend_of(port) == "b", what="the change after 410")
    assert "410 Gone" in gw.log() and "re-listing" in gw.log()


def test_kubernetes_status_only_change_publishes_nothing(
        tmp_path, kubeapi, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    for obj in world(port, {"a": [a.port]}, [web_route()]):
        kubeapi.apply(obj)
    gw = start_gateway(gateway_factory, tmp_path, kubeapi.port)
    generation = gw.debug_config()["generation"]
    with_status = dict(web_route(), status={"parents": [{
        "parentRef": {"name": "gw"}, "controllerName": "fluxgate.io/gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2024-01-01T00:00:00Z"}]}]})
    kubeapi.apply(with_status)
    kubeapi.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                   "metadata": {"name": "nobody-uses-me"}, "data": {"tls.crt": "", "tls.key": ""}})
    time.sleep(0.5)  # well past the hold-off: a rebuild would have been published by now
    assert gw.debug_config()["generation"] == generation
    kubeapi.apply(web_route(path="/changed"))  # while a real change is
    gw.wait_generation(generation + 1, timeout=3)


def _listening(port: int) -> bool:
    try:
        request(port, "/", timeout=0.5)
        return True
    except OSError:
        return False


def _readyz(gw) -> tuple[int, str] | None:
    try:
        status, _, body = gw.admin("/readyz")
    except OSError:
        return None
    return status, body.decode()


def _statuses_while(port: int, action, until_done) -> list:
    """Request / in a loop while ``action`` runs and until ``until_done()``; every answer."""
    seen = []
    action()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen.append(backend_of(port))
        if until_done(seen):
            return seen
        time.sleep(0.005)
    raise AssertionError(f"timed out; answers: {seen[-10:]!r}")


def test_kubernetes_new_route_is_not_served_before_its_backend_has_endpoints(
        tmp_path, kubeapi, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    everything = world(port, {"a": [a.port]}, [web_route()])
    backend_objects = [o for o in everything if o["kind"] in ("Service", "EndpointSlice")]
    for obj in everything:
        if obj not in backend_objects and obj["kind"] != "HTTPRoute":
            kubeapi.apply(obj)  # GatewayClass and Gateway: the listener, nothing on it
    gw = start_gateway(gateway_factory, tmp_path, kubeapi.port, FLUXGATE_HOLDOFF_MAX_MS="4000",
                       FLUXGATE_LOG_LEVEL="info")
    assert eventually(lambda: backend_of(port) == 404, what="the empty listener")

    # The route first, its Service and endpoints 0.4 s later (two watches, two events):
    # requests meanwhile find no route (404), never a route without a backend (500/503).
    def apply_route_then_backend():
        kubeapi.apply(web_route())
        time.sleep(0.4)
        for obj in backend_objects:
            kubeapi.apply(obj)

    seen = _statuses_while(port, apply_route_then_backend, lambda s: s[-1] == "a")
    assert set(seen) <= {404, "a"}, seen
    assert "holding new routes until their backends have endpoints" in gw.log()
    metrics = gw.admin("/metrics")[2].decode()
    assert "fluxgate_routes_held_for_endpoints_total 1.0" in metrics
    assert "fluxgate_kubernetes_synced 1.0" in metrics
    count = next(line for line in metrics.splitlines() if line.startswith("fluxgate_rebuild_seconds_count"))
    assert float(count.split()[1]) >= 1  # the held publish, at least


def test_kubernetes_route_to_a_service_without_endpoints_is_served_after_the_max_hold_off(
        tmp_path, kubeapi, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    everything = world(port, {"a": [a.port]}, [web_route(path="/web")])
    for obj in everything:
        if obj["kind"] != "EndpointSlice":  # a Service with no ready pod, for good
            kubeapi.apply(obj)
    gw = start_gateway(gateway_factory, tmp_path, kubeapi.port, FLUXGATE_HOLDOFF_MAX_MS="600",
                       FLUXGATE_LOG_LEVEL="info")
    assert backend_of(port, "/web") == 503  # the first table: served as it is
    assert backend_of(port, "/other") == 404
    kubeapi.apply(web_route(name="other", path="/other"))  # new, and no endpoints will come
    assert eventually(lambda: backend_of(port, "/other") == 503, what="the held route, served")
    assert "holding new routes until their backends have endpoints" in gw.log()
    generation = gw.debug_config()["generation"]
    kubeapi.apply(web_route(path="/edited"))  # an edit: its backend had no endpoints before either
    gw.wait_generation(generation + 1)
    assert backend_of(port, "/edited") == 503
    assert gw.log().count("holding new routes") == 1  # the edit was not held
