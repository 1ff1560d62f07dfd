"""The plan (control/sources/kubernetes/plan.py): which watches a shard runs, and
that each sees only what it selects."""

from __future__ import annotations

from control.objects import validation
from control.sources.kubernetes import GATEWAY, NAMESPACE, SECRET, Settings, plan
from tests.control.sources.kubernetes.fixtures import GW, keys, service, until


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
