"""KubernetesSource against tests/kubeapi: the real client over real HTTP on loopback.

Each test starts its own API server (in-process) and source, and stops both in
the fixture finaliser. Waits poll with a deadline; nothing sleeps a fixed time
to "let things settle" except where a test must show that nothing happens.
"""

from __future__ import annotations

import base64
import copy
import socket
import time

import pytest
from kubernetes import client

from control.cache import ObjectCache
from control.objects import validation
from control.sources.kubernetes import (GATEWAY, NAMESPACE, SECRET, KubernetesSource, Settings,
                                        plan, secret_refs)
from tests.kubeapi import KubeAPIServer
from tests.kubeapi.catalog import initial_crds
from tests.kubeapi.handler import HTTPServer

GW = "gateway.networking.k8s.io/v1"


@pytest.fixture(autouse=True)
def _backlog(monkeypatch):
    # socketserver listens with a backlog of 5; a real API server's is the
    # kernel's somaxconn. Eleven watches connecting at once would otherwise
    # wait out a SYN retransmit (1 s) now and then.
    monkeypatch.setattr(HTTPServer, "request_queue_size", 128)


@pytest.fixture
def servers():
    started: list[KubeAPIServer] = []

    def start(port: int = 0, **kwargs) -> KubeAPIServer:
        kwargs.setdefault("bookmark_interval", 0.2)
        kwargs.setdefault("rv_wait", 0.3)
        server = KubeAPIServer(**kwargs).start(port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def kube(servers):
    return servers()


@pytest.fixture
def sources():
    started: list[KubernetesSource] = []

    def start(url: str, settings: Settings = Settings(), wait: bool = True, **kwargs) -> KubernetesSource:
        configuration = client.Configuration()
        configuration.host = url
        kwargs.setdefault("backoff_base", 0.05)
        kwargs.setdefault("backoff_cap", 0.2)
        source = KubernetesSource(configuration, settings, **kwargs)
        started.append(source)
        source.start()
        if wait:
            until(lambda: source.synced, what="the initial lists")
        return source

    yield start
    for source in started:
        source.close()


def until(predicate, timeout: float = 5.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def keys(source: KubernetesSource, kind: str | None = None) -> set[tuple[str, str, str]]:
    return {(o.kind, o.namespace, o.name) for o in source.load().objects
            if kind is None or o.kind == kind}


def watch_of(source: KubernetesSource, text: str) -> dict:
    return next(d for d in source.describe() if d["watch"] == text)


def caught_up(source: KubernetesSource, kube: KubeAPIServer, watch: str) -> None:
    """Wait until ``watch`` has seen everything the server has written so far."""
    target = kube.resource_version
    until(lambda: int(watch_of(source, watch)["resourceVersion"] or 0) >= target,
          what=f"{watch} to reach resourceVersion {target}")


def service(name: str, namespace: str = "default", port: int = 80) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": port}]}}


def route(name: str, namespace: str = "default", path: str = "/") -> dict:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                                "backendRefs": [{"name": "web", "port": 80}]}]}}


def gateway(name: str = "gw", namespace: str = "default", secret: str | None = None,
            cls: str = "fluxgate") -> dict:
    listener: dict = {"name": "http", "protocol": "HTTP", "port": 80}
    if secret:
        listener = {"name": "https", "protocol": "HTTPS", "port": 443,
                    "tls": {"certificateRefs": [{"name": secret}]}}
    return {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": name, "namespace": namespace},
            "spec": {"gatewayClassName": cls, "listeners": [listener]}}


def tls_secret(name: str, value: str = "a", namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": _b64(value), "tls.key": _b64(value)}}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- list, then watch ---------------------------------------------------------------


def test_kubernetes_source_lists_then_watches(kube, sources):
    kube.apply(service("before"))
    source = sources(kube.url)
    assert ("Service", "default", "before") in keys(source)
    first = source.fingerprint()

    kube.apply(service("after"))
    until(lambda: ("Service", "default", "after") in keys(source), what="the watch event")
    assert source.fingerprint() != first

    kube.delete("v1", "Service", "before")
    until(lambda: ("Service", "default", "before") not in keys(source), what="the deletion")
    assert watch_of(source, "Service")["lists"] == 1  # all of it by watch, no re-list


def test_kubernetes_source_objects_read_like_the_file_source(kube, sources):
    kube.apply(route("bad", path="no-slash"))
    source = sources(kube.url)
    (obj,) = [o for o in source.load().objects if o.kind == "HTTPRoute"]
    assert obj.api_version == GW and obj.file == "kubernetes"
    assert "managedFields" not in obj.raw["metadata"]
    cache = ObjectCache()
    cache.apply(source.load())
    assert [str(e).split(":")[0] for e in cache.errors] == ["kubernetes HTTPRoute default/bad"]


def test_kubernetes_source_built_in_list_items_get_kind_and_api_version(kube, sources):
    kube.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]})
    source = sources(kube.url)
    (obj,) = [o for o in source.load().objects if o.kind == "EndpointSlice"]
    assert obj.api_version == "discovery.k8s.io/v1"
    assert ObjectCache().apply(source.load())  # parses as a typed EndpointSlice


def test_kubernetes_source_lists_in_pages(kube, sources):
    for i in range(7):
        kube.apply(service(f"s{i}"))
    source = sources(kube.url, list_limit=3)
    assert {name for _, _, name in keys(source, "Service")} == {f"s{i}" for i in range(7)}


# --- what matters ---------------------------------------------------------------------


def test_kubernetes_source_status_only_change_of_a_route_does_not_rebuild(kube, sources):
    kube.apply(service("web"))
    kube.apply(route("r"))
    source = sources(kube.url)
    cache = ObjectCache()
    assert cache.apply(source.load())

    before = source.fingerprint()
    with_status = route("r")
    with_status["status"] = {"parents": [{"parentRef": {"name": "gw"},
                                          "controllerName": "fluxgate.io/gateway-controller",
                                          "conditions": []}]}
    kube.apply(with_status)
    until(lambda: source.fingerprint() != before, what="the status event")
    assert cache.apply(source.load()) is False  # nothing translate reads changed

    kube.apply(route("r", path="/v2"))
    until(lambda: cache.apply(source.load()), what="the spec change to matter")


def test_kubernetes_source_unreferenced_secret_does_not_rebuild(kube, sources):
    source = sources(kube.url)
    fp = source.fingerprint()
    kube.apply(tls_secret("orphan"))
    kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "opaque"}, "data": {"k": _b64("v")}})
    caught_up(source, kube, "Secret [type=kubernetes.io/tls]")
    assert source.fingerprint() == fp
    assert watch_of(source, "Secret [type=kubernetes.io/tls]")["objects"] == 1  # Opaque never arrives
    assert not keys(source, "Secret")  # the cache does not read Secrets (yet)


def test_kubernetes_source_referenced_secret_change_counts(kube, sources):
    kube.apply(tls_secret("cert"))
    source = sources(kube.url)
    kube.apply(gateway(secret="cert"))
    until(lambda: ("Gateway", "default", "gw") in keys(source), what="the Gateway")

    fp = source.fingerprint()
    kube.apply(tls_secret("cert", value="b"))
    until(lambda: source.fingerprint() != fp, what="the referenced Secret to count")

    kube.apply(gateway())  # the reference is gone
    until(lambda: keys(source, "Gateway") and watch_of(source, "Gateway")["resourceVersion"]
          == str(kube.resource_version), what="the Gateway change")
    fp = source.fingerprint()
    kube.apply(tls_secret("cert", value="c"))
    caught_up(source, kube, "Secret [type=kubernetes.io/tls]")
    assert source.fingerprint() == fp


def test_secret_refs_reads_listener_certificate_refs_and_ingress_tls():
    gw = gateway(namespace="edge", secret="a")
    gw["spec"]["listeners"][0]["tls"]["certificateRefs"] += [
        {"name": "b", "namespace": "certs"},
        {"name": "c", "group": "example.com", "kind": "Vault"},  # not a Secret
    ]
    assert secret_refs("Gateway", gw) == {("edge", "a"), ("certs", "b")}
    ingress = {"metadata": {"name": "i", "namespace": "web"},
               "spec": {"tls": [{"secretName": "x"}, {"hosts": ["a.example.com"]}]}}
    assert secret_refs("Ingress", ingress) == {("web", "x")}
    assert secret_refs("Gateway", {"metadata": {"name": "broken"}, "spec": "nonsense"}) == frozenset()


def test_kubernetes_source_ingress_of_another_class_is_dropped(kube, sources):
    def ingress(name: str, cls: str | None = None, annotation: str | None = None) -> dict:
        obj: dict = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                     "metadata": {"name": name},
                     "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}
        if cls:
            obj["spec"]["ingressClassName"] = cls
        if annotation:
            obj["metadata"]["annotations"] = {"kubernetes.io/ingress.class": annotation}
        return obj

    for obj in (ingress("ours", "fluxgate"), ingress("none"), ingress("nginx", "nginx"),
                ingress("legacy", annotation="nginx")):
        kube.apply(obj)
    source = sources(kube.url)
    assert {name for _, _, name in keys(source, "Ingress")} == {"ours", "none"}

    kube.apply(ingress("ours", "nginx"))  # moved to another class: gone for us
    until(lambda: ("Ingress", "default", "ours") not in keys(source), what="the class change")


# --- sharding ------------------------------------------------------------------------------


def test_plan_watches_every_kind_the_translator_reads():
    watched = {(s.kind.api_version, s.kind.kind) for s in plan(Settings())}
    read = set(validation.KINDS)
    assert {kind for _, kind in read} <= {kind for _, kind in watched}
    assert watched - {("v1", "Secret")} <= read  # each at a version the cache parses


def test_plan_selects_by_name_and_namespace():
    specs = plan(Settings(gateway_class="edge", namespaces=("a", "b")))
    text = {str(s) for s in specs}
    assert "GatewayClass [metadata.name=edge]" in text
    assert "IngressClass [metadata.name=edge]" in text
    assert {"Gateway in a", "Gateway in b", "HTTPRoute in a", "EndpointSlice in b"} <= text
    assert {"Namespace [metadata.name=a]", "Namespace [metadata.name=b]"} <= text
    assert "Secret in a [type=kubernetes.io/tls]" in text
    assert all(s.namespace in ("a", "b") for s in specs if s.kind.namespaced)
    assert not any(s.kind.namespaced and s.namespace is None for s in specs)

    everywhere = plan(Settings(gateways=("a/x",)))
    classes = [s for s in everywhere if s.kind.kind == "GatewayClass"]
    assert [s.field_selector for s in classes] == [""]  # named Gateways may be of any class
    assert [s.namespace for s in everywhere if s.kind is GATEWAY] == [None]
    assert [s.field_selector for s in everywhere if s.kind is NAMESPACE] == [""]
    assert len({(s.kind.kind, s.namespace, s.field_selector) for s in everywhere}) == len(everywhere)
    assert [s.field_selector for s in everywhere if s.kind is SECRET] == ["type=kubernetes.io/tls"]


def test_kubernetes_source_watch_namespaces_limit_what_it_sees(kube, sources):
    kube.apply(service("web", "team-a"))
    kube.apply(service("web", "team-b"))
    source = sources(kube.url, Settings(namespaces=("team-a",)))
    assert keys(source, "Service") == {("Service", "team-a", "web")}
    assert keys(source, "Namespace") == {("Namespace", "", "team-a")}

    kube.apply(service("api", "team-b"))
    kube.apply(service("api", "team-a"))
    until(lambda: ("Service", "team-a", "api") in keys(source), what="team-a's new Service")
    assert ("Service", "team-b", "api") not in keys(source)


def test_kubernetes_source_gateway_class_watch_sees_only_ours(kube, sources):
    for name in ("fluxgate", "other"):
        kube.apply({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": name},
                    "spec": {"controllerName": "fluxgate.io/gateway-controller"}})
    source = sources(kube.url)
    assert keys(source, "GatewayClass") == {("GatewayClass", "", "fluxgate")}


# --- failures and recovery -------------------------------------------------------------


def test_kubernetes_source_unreachable_api_retries_until_it_answers(servers, sources):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = sources(f"http://127.0.0.1:{port}", wait=False)
    until(lambda: "connection refused" in source.waiting(), what="the error in waiting()")
    assert not source.synced
    kube = servers(port)
    kube.apply(service("web"))
    until(lambda: source.synced, what="the lists once the API answers")
    assert ("Service", "default", "web") in keys(source)


def test_kubernetes_source_relists_after_410_gone(servers, sources):
    kube = servers(bookmark_interval=60)  # no bookmark moves the watches' versions on
    source = sources(kube.url)
    # Every watch open first: one opened after the next write would start at its version
    # (the bookmark a watch begins with) and rightly see no 410.
    assert kube.wait_for_watches(len(source.describe()))
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unwatched"}})
    kube.compact()  # every watch's version is now older than the history
    kube.drop_watches()
    kube.apply(route("r"))  # after the cut: only the re-list (or the watch after it) can carry it
    until(lambda: all(d["gone"] >= 1 for d in source.describe()), what="410 on every watch")
    until(lambda: ("HTTPRoute", "default", "r") in keys(source), what="the route after the re-list")
    until(lambda: all(d["lists"] == 2 for d in source.describe()), what="one re-list per watch")

    kube.apply(route("r2"))  # and the watch goes on from the re-list's version
    until(lambda: ("HTTPRoute", "default", "r2") in keys(source), what="the next event")


def test_kubernetes_source_dropped_watch_resumes_from_its_version(kube, sources):
    source = sources(kube.url)
    assert kube.wait_for_watches(len(source.describe()))
    kube.drop_watches()  # mid-stream: the sockets are cut
    kube.apply(service("after-drop"))
    until(lambda: ("Service", "default", "after-drop") in keys(source), what="the change after the drop")
    service_watch = watch_of(source, "Service")
    assert service_watch["lists"] == 1 and service_watch["watches"] >= 2 and service_watch["gone"] == 0
    assert all(d["error"] == "" or d["synced"] for d in source.describe())


def test_kubernetes_source_resync_renews_the_watch_without_a_list(kube, sources):
    kube.apply(service("web"))
    source = sources(kube.url, Settings(resync_seconds=1))
    fp = source.fingerprint()
    until(lambda: watch_of(source, "Service")["watches"] >= 3, timeout=6, what="two watch renewals")
    assert watch_of(source, "Service")["lists"] == 1  # resumed from its resourceVersion
    assert source.fingerprint() == fp  # nothing differed: nothing to rebuild
    kube.apply(service("after-renewals"))  # and the renewed watch still sees changes
    until(lambda: ("Service", "default", "after-renewals") in keys(source), what="a change after renewals")


def test_kubernetes_source_relists_on_its_timer_without_a_rebuild(kube, sources):
    kube.apply(service("web"))
    source = sources(kube.url, Settings(resync_seconds=600, relist_seconds=1))
    fp = source.fingerprint()
    until(lambda: watch_of(source, "Service")["lists"] >= 2, timeout=5, what="the timed re-list")
    assert source.fingerprint() == fp  # nothing differed: nothing to rebuild


def test_kubernetes_source_close_ends_every_thread_quickly(kube, sources):
    source = sources(kube.url)
    threads = list(source._threads)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 2
    assert not any(t.is_alive() for t in threads)


def test_kubernetes_source_load_is_a_snapshot(kube, sources):
    kube.apply(route("r"))
    source = sources(kube.url)
    loaded = source.load()
    frozen = copy.deepcopy([o.raw for o in loaded.objects])
    kube.apply(route("r", path="/changed"))
    until(lambda: source.fingerprint() and any(
        o.raw.get("spec", {}).get("rules", [{}])[0].get("matches", [{}])[0].get("path", {}).get("value")
        == "/changed" for o in source.load().objects if o.kind == "HTTPRoute"), what="the change")
    assert [o.raw for o in loaded.objects] == frozen


def test_kubernetes_source_treats_a_kind_whose_crd_is_missing_as_empty_until_it_is_installed(
        kube, sources):
    crd = next(c for c in initial_crds() if c["spec"]["names"]["kind"] == "FluxGateRoute")
    assert kube.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])
    kube.apply(route("r"))
    source = sources(kube.url)  # waits for synced: a missing CRD does not block it
    assert ("HTTPRoute", "default", "r") in keys(source)
    assert watch_of(source, "FluxGateRoute")["error"].startswith("not installed")
    assert source.waiting() == ""

    kube.apply(crd)  # installed later: seen at the next look, and watched from then on
    kube.apply({"apiVersion": "fluxgate.io/v1alpha3", "kind": "FluxGateRoute",
                "metadata": {"name": "f", "namespace": "default"},
                "spec": {"parentRefs": [{"name": "gw"}], "rules": []}})
    until(lambda: ("FluxGateRoute", "default", "f") in keys(source),
          what="the FluxGateRoute once its CRD is installed")
    assert watch_of(source, "FluxGateRoute")["error"] == ""
