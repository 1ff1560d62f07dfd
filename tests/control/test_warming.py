"""Warming: which new or changed routes wait for the endpoints of their backends."""

from __future__ import annotations

import copy

from control import ir
from control.cache import ObjectCache
from control.objects.raw import KObject
from control.translate import Memo, translate
from control.warming import UNRESOLVED, Warming, markers

GW = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
      "metadata": {"name": "gw", "namespace": "default"},
      "spec": {"gatewayClassName": "fluxgate", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}


def route(name: str, service: str, path: str = "/") -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                                "backendRefs": [{"name": service, "port": 80}]}]}}


def service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"port": 80}]}}


def endpoints(name: str) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name + "-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]}


class World:
    def __init__(self, *objs: dict) -> None:
        self.cache, self.memo, self.warming = ObjectCache(), Memo(), Warming()
        self.apply(*objs)
        self.cold()
        self.publish()

    def apply(self, *objs: dict) -> None:
        self.cache.apply_changes([KObject(copy.deepcopy(o), "x", 0) for o in objs])

    def cold(self) -> list[str]:
        self.result = translate(self.cache.objects(), memo=self.memo)
        return self.warming.cold(self.memo.routes, self.result.ir.clusters)

    def publish(self) -> None:
        self.warming.published(self.memo.routes, self.result.ir.clusters)


def test_markers_are_unresolved_and_empty_backends_with_weight():
    rule = ir.Rule(index=0, matches=(), backends=(
        ir.Backend(cluster="ns/ok:80"), ir.Backend(cluster="ns/empty:80"),
        ir.Backend(cluster=""), ir.Backend(cluster="ns/zero:80", weight=0)))
    route = ir.Route(namespace="ns", name="r", rules=(rule,))
    assert markers(route, {"ns/empty:80", "ns/zero:80"}) == {"ns/empty:80", UNRESOLVED}


def test_a_new_route_is_cold_until_its_service_and_endpoints_arrive():
    world = World(GW, service("a"), endpoints("a"), route("old", "a", "/old"))
    world.apply(route("new", "b"))  # Service b does not exist yet
    assert world.cold() == ["HTTPRoute/default/new"]
    world.apply(service("b"))  # a Service, no endpoints yet: still cold
    assert world.cold() == ["HTTPRoute/default/new"]
    world.apply(endpoints("b"))
    assert world.cold() == []


def test_an_edit_that_keeps_a_backend_without_endpoints_is_not_cold():
    world = World(GW, service("a"), route("r", "a"))  # published with no endpoints (503)
    world.apply(route("r", "a", "/edited"))
    assert world.cold() == []


def test_an_edit_onto_a_missing_service_is_cold_and_publishing_clears_it():
    world = World(GW, service("a"), endpoints("a"), route("r", "a"))
    world.apply(route("r", "missing"))
    assert world.cold() == ["HTTPRoute/default/r"]
    world.publish()  # held as long as allowed, then published as it is
    assert world.cold() == []


def test_endpoints_going_away_do_not_hold_anything():
    world = World(GW, service("a"), endpoints("a"), route("r", "a"))
    world.cache.apply_changes([], [KObject(endpoints("a"), "x", 0)])  # scaled to zero
    assert world.cold() == []
