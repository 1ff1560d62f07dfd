"""The status writer: the pure merge (tables), then passes against tests/kubeapi."""

from __future__ import annotations

import time

import pytest

from control.objects.raw import KObject
from control.status import Condition, ParentRef, StatusReport
from control.controller.status_writer import (
    StatusWriter,
    merge_conditions,
    merge_parents,
    merged_status,
)
from control.objects import validation
from control.translate import CONTROLLER_NAME, translate
from tests.kubeapi import KubeAPIServer, client_for

T0, T1 = "2030-01-01T00:00:00Z", "2030-01-01T00:05:00Z"
GW_API = "gateway.networking.k8s.io/v1"
OTHER = "other.example/controller"


def _c(type_: str, status: str = "True", reason: str = "", message: str = "") -> Condition:
    return Condition(type_, status, reason or type_, message)


def _api(type_: str, status: str = "True", reason: str = "", message: str = "",
         at: str = T0, generation: int = 1) -> dict:
    return {"type": type_, "status": status, "reason": reason or type_, "message": message,
            "lastTransitionTime": at, "observedGeneration": generation}


# --- conditions ---------------------------------------------------------------------------

@pytest.mark.parametrize("current, desired, expected", [
    pytest.param([], [_c("Accepted")], [_api("Accepted", at=T1, generation=2)], id="new"),
    pytest.param([_api("Accepted")], [_c("Accepted", message="refined")],
                 [_api("Accepted", message="refined", generation=2)],
                 id="same status keeps its time"),
    pytest.param([_api("Accepted")], [_c("Accepted", "False", "NoMatchingParent")],
                 [_api("Accepted", "False", "NoMatchingParent", at=T1, generation=2)],
                 id="flipped status gets a new time"),
    pytest.param([_api("Accepted", "Unknown", "Pending", "Waiting for controller",
                       at="1970-01-01T00:00:00Z")], [_c("Accepted")],
                 [_api("Accepted", at=T1, generation=2)], id="the CRD's pending default"),
    pytest.param([_api("Accepted"), _api("Conflicted")], [_c("Accepted")],
                 [_api("Accepted", generation=2)], id="an owned type no longer reported goes"),
    pytest.param([_api("example.com/PolicyAffected"), _api("Accepted")], [_c("Accepted")],
                 [_api("Accepted", generation=2), _api("example.com/PolicyAffected")],
                 id="a foreign type stays"),
    pytest.param([_api("Accepted", at="")], [_c("Accepted")],
                 [_api("Accepted", at=T1, generation=2)], id="a missing time is set"),
])
def test_status_merge_conditions_by_type(current, desired, expected):
    assert merge_conditions(current, desired, 2, T1) == expected


def test_status_merge_conditions_without_foreign_types_keeps_only_the_report():
    assert merge_conditions([_api("Accepted"), _api("x.io/Other")], [_c("Accepted")], 1, T1,
                            owned=None) == [_api("Accepted")]


def test_status_merge_truncates_messages_to_the_api_limit():
    [cond] = merge_conditions([], [_c("Accepted", message="x" * 40000)], 1, T1)
    assert len(cond["message"]) == 32768


# --- route parents ------------------------------------------------------------------------

REF = ParentRef("gateway.networking.k8s.io", "Gateway", "default", "gw")
REF_API = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default",
           "name": "gw"}


def _report_route(*refs: ParentRef, accepted: bool = True, generation: int = 3):
    report = StatusReport()
    route = report.object("HTTPRoute", "default", "web", generation)
    for ref in refs:
        route.parent(ref, CONTROLLER_NAME).set("Accepted", accepted,
                                               "Accepted" if accepted else "NotAllowedByListeners")
    return route


def _parent(ref: dict, controller: str = CONTROLLER_NAME, *conditions: dict) -> dict:
    return {"parentRef": ref, "controllerName": controller, "conditions": list(conditions)}


def test_status_merge_parents_keeps_other_controllers_untouched_in_place():
    theirs = _parent({"name": "their-gw", "sectionName": "x"}, OTHER, _api("Accepted", "False"))
    current = [theirs, _parent({"name": "gw"}, CONTROLLER_NAME, _api("Accepted"))]
    out = merge_parents(current, _report_route(REF).parents, "default", CONTROLLER_NAME, 3, T1)
    assert out[0] is theirs and out[0] == _parent({"name": "their-gw", "sectionName": "x"},
                                                  OTHER, _api("Accepted", "False"))
    # Ours: matched although written without defaults, so the time is kept.
    assert out[1] == _parent(REF_API, CONTROLLER_NAME, _api("Accepted", generation=3))


def test_status_merge_parents_drops_ours_no_longer_reported():
    current = [_parent(REF_API, CONTROLLER_NAME, _api("Accepted")),
               _parent(dict(REF_API, name="old"), CONTROLLER_NAME, _api("Accepted"))]
    out = merge_parents(current, _report_route(REF).parents, "default", CONTROLLER_NAME, 3, T1)
    assert [p["parentRef"]["name"] for p in out] == ["gw"]


def test_status_merge_parents_tells_listeners_apart():
    http = ParentRef("gateway.networking.k8s.io", "Gateway", "default", "gw", "http")
    current = [_parent(dict(REF_API, sectionName="https"), CONTROLLER_NAME, _api("Accepted"))]
    [out] = merge_parents(current, _report_route(http).parents, "default", CONTROLLER_NAME, 3, T1)
    assert out["parentRef"]["sectionName"] == "http"
    assert out["conditions"][0]["lastTransitionTime"] == T1  # a different parent: new


# --- whole objects, and no-op detection ----------------------------------------------------

def _obj(kind: str, status: dict | None, namespace: str = "default") -> dict:
    obj = {"apiVersion": GW_API, "kind": kind,
           "metadata": {"name": "web", "namespace": namespace, "generation": 3}}
    if status is not None:
        obj["status"] = status
    return obj


def test_status_merged_route_is_a_no_op_the_second_time():
    desired = _report_route(REF)
    first = merged_status(_obj("HTTPRoute", None), desired, now=T0)
    assert first == {"parents": [_parent(REF_API, CONTROLLER_NAME, _api("Accepted", generation=3))]}
    assert merged_status(_obj("HTTPRoute", first), desired, now=T1) == first


def test_status_merged_route_without_report_keeps_only_others():
    theirs = _parent({"name": "x"}, OTHER)
    current = {"parents": [theirs, _parent(REF_API, CONTROLLER_NAME, _api("Accepted"))]}
    assert merged_status(_obj("HTTPRoute", current), None, now=T1) == {"parents": [theirs]}


def test_status_merged_gateway_owns_listeners_and_addresses():
    report = StatusReport()
    gw = report.object("Gateway", "default", "gw", 2)
    gw.set("Accepted", True, "Accepted")
    lst = gw.listener("http")
    lst.attached_routes = 4
    lst.set("Programmed", True, "Programmed")
    current = {
        "conditions": [_api("Accepted"), _api("x.io/Extra")],
        "listeners": [{"name": "http", "attachedRoutes": 1, "supportedKinds": [],
                       "conditions": [_api("Programmed"), _api("Conflicted")]},
                      {"name": "gone", "attachedRoutes": 0, "supportedKinds": [], "conditions": []}],
        "addresses": [{"type": "IPAddress", "value": "10.0.0.1"}],
    }
    out = merged_status(_obj("Gateway", current), gw, now=T1)
    assert out == {
        "conditions": [_api("Accepted", generation=2), _api("x.io/Extra")],
        "listeners": [{"name": "http", "attachedRoutes": 4, "supportedKinds": [],
                       "conditions": [_api("Programmed", generation=2)]}],
    }
    assert current["listeners"][0]["attachedRoutes"] == 1  # the input is left alone


@pytest.mark.parametrize("accepted, lb, expected", [
    (True, [{"ip": "203.0.113.7"}], {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
    (False, [{"ip": "203.0.113.7"}], {"loadBalancer": {}}),
])
def test_status_merged_ingress_gets_the_address_only_when_accepted(accepted, lb, expected):
    report = StatusReport()
    ing = report.object("Ingress", "default", "web", 1)
    ing.set("Accepted", accepted, "Accepted" if accepted else "InvalidAnnotation")
    obj = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "web", "namespace": "default"}, "status": {"loadBalancer": {}}}
    assert merged_status(obj, ing, now=T1, load_balancer=lb) == expected


# --- against the API server -----------------------------------------------------------------

CLASS = {"apiVersion": GW_API, "kind": "GatewayClass", "metadata": {"name": "fluxgate"},
         "spec": {"controllerName": CONTROLLER_NAME}}
GATEWAY = {"apiVersion": GW_API, "kind": "Gateway", "metadata": {"name": "gw"},
           "spec": {"gatewayClassName": "fluxgate", "listeners": [
               {"name": "http", "port": 8080, "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "All"}}}]}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"ports": [{"port": 80}]}}


def _route(name: str, kind: str = "HTTPRoute", **extra) -> dict:
    api_version = GW_API if kind == "HTTPRoute" else "fluxgate.io/v1alpha3"
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, **extra},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [f"{name}.example"],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}


INGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "ing"},
           "spec": {"ingressClassName": "fluxgate", "rules": [{"host": "ing.example", "http": {
               "paths": [{"path": "/", "pathType": "Prefix",
                          "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}
INGRESS_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                 "metadata": {"name": "fluxgate"},
                 "spec": {"controller": "fluxgate.io/ingress-controller"}}
READ = [(GW_API, "GatewayClass"), (GW_API, "Gateway"), (GW_API, "HTTPRoute"),
        ("fluxgate.io/v1alpha3", "FluxGateRoute"), ("v1", "Service"),
        ("networking.k8s.io/v1", "Ingress"), ("networking.k8s.io/v1", "IngressClass")]


def _translate(kube) -> StatusReport:
    """What the controller will do: every object from the API, translated (Kubernetes mode)."""
    objects = [validation.parse(KObject(raw, "kube", 0))
               for api_version, kind in READ for raw in kube.list(api_version, kind)]
    return translate(objects, default_class=None).status


@pytest.fixture
def kube():
    server = KubeAPIServer().start()
    for obj in (CLASS, GATEWAY, SERVICE):
        server.apply(obj)
    yield server
    server.stop()


@pytest.fixture
def api_client(kube):
    with client_for(kube.url) as api:
        yield api


def _status(kube, api_version: str, kind: str, name: str, namespace: str = "default") -> dict:
    return kube.get(api_version, kind, name, namespace).get("status", {})


def _rv(kube, api_version: str, kind: str, name: str, namespace: str = "default") -> str:
    return kube.get(api_version, kind, name, namespace)["metadata"]["resourceVersion"]


def test_status_writer_writes_every_kind(kube, api_client):
    kube.apply(_route("web"))
    kube.apply(_route("canary", "FluxGateRoute"))
    kube.apply(INGRESS_CLASS)
    kube.apply(INGRESS)
    writer = StatusWriter(api_client, ingress_load_balancer=[{"ip": "203.0.113.7"}])
    result = writer.write(_translate(kube))
    assert (result.writes, result.failed, result.conflicts) == (5, 0, 0), result.errors

    gc = _status(kube, GW_API, "GatewayClass", "fluxgate")
    assert [(c["type"], c["status"], c["reason"]) for c in gc["conditions"]] == [
        ("Accepted", "True", "Accepted")]
    gw = _status(kube, GW_API, "Gateway", "gw")
    assert {c["type"]: c["status"] for c in gw["conditions"]} == {"Accepted": "True",
                                                                   "Programmed": "True"}
    [listener] = gw["listeners"]
    assert listener["name"] == "http" and listener["attachedRoutes"] == 2
    assert {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"} in listener["supportedKinds"]
    assert all(c["observedGeneration"] == 1 for c in gw["conditions"] + listener["conditions"])
    for api_version, kind, name in ((GW_API, "HTTPRoute", "web"),
                                    ("fluxgate.io/v1alpha3", "FluxGateRoute", "canary")):
        [parent] = _status(kube, api_version, kind, name)["parents"]
        assert parent["controllerName"] == CONTROLLER_NAME
        assert parent["parentRef"] == REF_API
        assert {c["type"]: c["status"] for c in parent["conditions"]} == {
            "Accepted": "True", "ResolvedRefs": "True"}
    assert _status(kube, "networking.k8s.io/v1", "Ingress", "ing") == {
        "loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}


def test_status_writer_second_identical_pass_writes_nothing(kube, api_client):
    kube.apply(_route("web"))
    report = _translate(kube)
    writer = StatusWriter(api_client)
    assert writer.write(report).writes == 3
    before = kube.resource_version
    again = writer.write(_translate(kube))
    assert (again.writes, again.planned, again.skipped) == (0, 0, 3)  # not even read
    # A new leader starts with nothing settled: it reads everything, writes nothing.
    fresh = StatusWriter(api_client).write(_translate(kube))
    assert (fresh.writes, fresh.unchanged) == (0, 3)
    assert kube.resource_version == before


def test_status_writer_keeps_transition_time_and_moves_generation(kube, api_client):
    kube.apply(_route("web"))
    clock = iter([T0, T1, T1])
    writer = StatusWriter(api_client, clock=lambda: next(clock))
    writer.write(_translate(kube))
    kube.apply(dict(_route("web"), spec=dict(_route("web")["spec"], hostnames=["new.example"])))
    result = writer.write(_translate(kube))  # generation 2; every status unchanged
    assert result.writes == 1  # the route (its observedGeneration); the Gateway did not change
    [parent] = _status(kube, GW_API, "HTTPRoute", "web")["parents"]
    assert {(c["lastTransitionTime"], c["observedGeneration"]) for c in parent["conditions"]} == {
        (T0, 2)}
    kube.delete("v1", "Service", "web")  # ResolvedRefs flips
    writer.write(_translate(kube))
    [parent] = _status(kube, GW_API, "HTTPRoute", "web")["parents"]
    times = {c["type"]: (c["status"], c["lastTransitionTime"]) for c in parent["conditions"]}
    assert times == {"Accepted": ("True", T0), "ResolvedRefs": ("False", T1)}


def test_status_writer_preserves_other_controllers_parents(kube, api_client):
    theirs = _parent({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "name": "their-gw"}, OTHER, _api("Accepted", "False", "Pending"))
    kube.apply(dict(_route("web"), status={"parents": [theirs]}))
    StatusWriter(api_client).write(_translate(kube))
    parents = _status(kube, GW_API, "HTTPRoute", "web")["parents"]
    assert parents[0] == theirs
    assert [p["controllerName"] for p in parents] == [OTHER, CONTROLLER_NAME]


def test_status_writer_retries_a_conflict_with_a_fresh_read(kube, api_client):
    kube.apply(_route("web"))
    writer = StatusWriter(api_client, workers=1)
    real = writer.api
    raced = []

    class Racing:
        """A user edits the route between the writer's read and its write."""

        def __getattr__(self, name):
            return getattr(real, name)

        def replace_namespaced_custom_object_status(self, group, version, ns, plural, name,
                                                    body, **kwargs):
            if plural == "httproutes" and not raced:
                raced.append(name)
                kube.apply(dict(_route(name), metadata={"name": name, "labels": {"team": "a"}}))
            return real.replace_namespaced_custom_object_status(group, version, ns, plural, name,
                                                                body, **kwargs)

    writer.api = Racing()
    result = writer.write(_translate(kube))
    assert raced == ["web"]
    assert (result.conflicts, result.writes, result.failed) == (1, 3, 0)
    route = kube.get(GW_API, "HTTPRoute", "web")
    assert route["metadata"]["labels"] == {"team": "a"}  # the user's edit survived
    assert route["status"]["parents"][0]["controllerName"] == CONTROLLER_NAME


def test_status_writer_gives_up_after_bounded_conflicts(kube, api_client):
    kube.apply(_route("web"))
    writer = StatusWriter(api_client, workers=1, conflict_retries=2)
    real = writer.api

    class AlwaysStale:
        def __getattr__(self, name):
            return getattr(real, name)

        def replace_namespaced_custom_object_status(self, group, version, ns, plural, name,
                                                    body, **kwargs):
            if plural == "httproutes":
                body["metadata"]["resourceVersion"] = "1"
            return real.replace_namespaced_custom_object_status(group, version, ns, plural, name,
                                                                body, **kwargs)

    writer.api = AlwaysStale()
    result = writer.write(_translate(kube))
    assert (result.conflicts, result.failed, result.writes) == (3, 1, 2)
    assert "HTTPRoute default/web: still conflicting" in result.errors[0]
    writer.api = real  # the next pass tries the route again, and only the route
    again = writer.write(_translate(kube))
    assert (again.planned, again.writes) == (1, 1)


def test_status_writer_takes_our_parents_off_a_route_that_left(kube, api_client):
    kube.apply(_route("web"))
    writer = StatusWriter(api_client)
    writer.write(_translate(kube))
    kube.apply(dict(GATEWAY, metadata={"name": "theirs"},
                    spec=dict(GATEWAY["spec"], gatewayClassName="other")))
    moved = _route("web")
    moved["spec"]["parentRefs"] = [{"name": "theirs"}]  # another controller's Gateway
    kube.apply(moved)
    report = _translate(kube)
    assert report.find("HTTPRoute", "default", "web") is None
    result = writer.write(report)
    assert result.writes == 2  # the route, and the Gateway (attachedRoutes 1 → 0)
    assert _status(kube, GW_API, "HTTPRoute", "web")["parents"] == []
    assert writer.write(_translate(kube)).planned == 0


def test_status_writer_skips_objects_that_are_gone(kube, api_client):
    kube.apply(_route("web"))
    report = _translate(kube)
    kube.delete(GW_API, "HTTPRoute", "web")
    result = StatusWriter(api_client).write(report)
    assert (result.gone, result.writes, result.failed) == (1, 2, 0)


def test_status_writer_stops_writing_when_no_longer_allowed(kube, api_client):
    kube.apply(_route("web"))
    result = StatusWriter(api_client, allowed=lambda: False).write(_translate(kube))
    assert (result.writes, result.failed) == (0, 3)
    assert _status(kube, GW_API, "HTTPRoute", "web") == {}


def test_status_writer_settles_1000_routes_with_one_write_each(kube, api_client):
    count = 1000
    for i in range(count):
        kube.apply(_route(f"r{i}"))
    report = _translate(kube)
    writer = StatusWriter(api_client)
    before = kube.resource_version
    started = time.perf_counter()
    result = writer.write(report)
    elapsed = time.perf_counter() - started
    # Every write bumps the global resourceVersion by one: nothing was written twice.
    assert result.writes == count + 2 == kube.resource_version - before
    assert (result.conflicts, result.failed) == (0, 0)
    gw = _status(kube, GW_API, "Gateway", "gw")
    assert gw["listeners"][0]["attachedRoutes"] == count
    assert all(r["status"]["parents"] for r in kube.list(GW_API, "HTTPRoute"))
    again = StatusWriter(api_client).write(_translate(kube))  # a new leader's full pass
    assert (again.writes, again.unchanged) == (0, count + 2)
    print(f"status: {count} routes + Gateway + GatewayClass settled in {elapsed:.2f} s with"
          f" {result.writes} writes ({writer.workers} workers, in-process API server);"
          f" a new leader's re-read pass wrote {again.writes} in {again.elapsed:.2f} s")
