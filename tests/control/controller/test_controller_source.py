"""The controller's source: KubernetesSource running the watches it is given.

``KubernetesSource(specs=...)`` replaces ``plan(settings)``; ``ControllerSource``
passes ``controller_plan(settings)`` (every shard's objects). Each test starts
its own in-process API server (tests/control/sources/kubernetes/fixtures.py) and source and
stops both in a finaliser.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from control.controller.controller import ControllerSource, controller_plan
from control.sources.kubernetes import GATEWAY, SERVICE, KubernetesSource, Settings, WatchSpec, plan
from tests.control.sources.kubernetes.fixtures import (  # noqa: F401  (fixtures)
    _backlog, gateway, kube, servers, service, until)

GW = "gateway.networking.k8s.io/v1"
NET = "networking.k8s.io/v1"


@pytest.fixture
def start():
    started: list[KubernetesSource] = []

    def make(cls, url: str, settings: Settings = Settings(), **kwargs) -> KubernetesSource:
        configuration = client.Configuration()
        configuration.host = url
        source = cls(configuration, settings, backoff_base=0.05, backoff_cap=0.2, **kwargs)
        started.append(source)
        source.start()
        until(lambda: source.synced, what="the initial lists")
        return source

    yield make
    for source in started:
        source.close()


def kinds(source: KubernetesSource) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for o in source.load().objects:
        out.setdefault(o.kind, set()).add(o.name)
    return out


def test_kubernetes_source_runs_exactly_the_watches_it_is_given(kube, start):
    kube.apply(gateway("gw"))
    kube.apply(service("web"))
    kube.apply({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "fluxgate"},
                "spec": {"controllerName": "fluxgate.io/gateway-controller"}})
    specs = [WatchSpec(GATEWAY), WatchSpec(SERVICE, "default")]
    source = start(KubernetesSource, kube.url, specs=specs)
    assert [d["watch"] for d in source.describe()] == ["Gateway", "Service in default"]
    assert kinds(source) == {"Gateway": {"gw"}, "Service": {"web"}}  # no GatewayClass watch


def test_kubernetes_source_without_specs_runs_the_shard_plan(kube, start):
    settings = Settings(gateway_class="edge", namespaces=("shop",))
    source = start(KubernetesSource, kube.url, settings)
    assert [d["watch"] for d in source.describe()] == [str(s) for s in plan(settings)]


def test_controller_source_watches_every_shards_classes_and_ingresses(kube, start):
    for name, controller in (("fluxgate", "fluxgate.io/gateway-controller"),
                             ("edge", "fluxgate.io/gateway-controller"),
                             ("other", "example.com/other")):
        kube.apply({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": name},
                    "spec": {"controllerName": controller}})
    kube.apply({"apiVersion": NET, "kind": "IngressClass", "metadata": {"name": "nginx"},
                "spec": {"controller": "k8s.io/ingress-nginx"}})
    kube.apply({"apiVersion": NET, "kind": "Ingress", "metadata": {"name": "ing"},
                "spec": {"ingressClassName": "nginx", "defaultBackend": {
                    "service": {"name": "web", "port": {"number": 80}}}}})
    settings = Settings(gateway_class="fluxgate")
    shard = start(KubernetesSource, kube.url, settings)
    ctl = start(ControllerSource, kube.url, settings)

    assert [d["watch"] for d in ctl.describe()] == [str(s) for s in controller_plan(settings)]
    # A shard sees its own class only; the controller sees every class and every
    # Ingress (translate decides which are FluxGate's).
    assert kinds(shard).get("GatewayClass") == {"fluxgate"}
    assert "Ingress" not in kinds(shard) and "IngressClass" not in kinds(shard)
    assert kinds(ctl)["GatewayClass"] == {"fluxgate", "edge", "other"}
    assert kinds(ctl)["IngressClass"] == {"nginx"}
    assert kinds(ctl)["Ingress"] == {"ing"}
