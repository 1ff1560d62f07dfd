"""PATCH in its four content types, on objects and on the status subresource."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException

from tests.kubeapi.patch import json_patch, merge_patch, strategic_merge_patch

G, V, P = "fluxgate.io", "v1alpha3", "fluxgateroutes"
JSON_PATCH = "application/json-patch+json"  # CustomObjectsApi sends merge patch unless told


@pytest.fixture
def one_route(custom):
    return custom.create_namespaced_custom_object(G, V, "default", P, {
        "apiVersion": f"{G}/{V}", "kind": "FluxGateRoute",
        "metadata": {"name": "r", "labels": {"a": "1", "b": "2"}},
        "spec": {"hostnames": ["a.example"], "timeout": "5s"}})


def test_merge_patch_merges_maps_deletes_nulls_and_replaces_lists(custom, one_route):
    out = custom.patch_namespaced_custom_object(G, V, "default", P, "r", {
        "metadata": {"labels": {"a": None, "c": "3"}},
        "spec": {"hostnames": ["b.example"], "timeout": None}})
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert out["spec"] == {"hostnames": ["b.example"]}
    assert out["metadata"]["generation"] == 2


def test_json_patch_applies_operations_in_order(custom, one_route):
    out = custom.patch_namespaced_custom_object(G, V, "default", P, "r", [
        {"op": "test", "path": "/spec/timeout", "value": "5s"},
        {"op": "add", "path": "/spec/hostnames/-", "value": "b.example"},
        {"op": "replace", "path": "/spec/timeout", "value": "10s"},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "copy", "from": "/spec/timeout", "path": "/spec/idle"},
        {"op": "move", "from": "/spec/idle", "path": "/spec/idleTimeout"},
        {"op": "add", "path": "/metadata/annotations", "value": {"x~y/z": "1"}},
    ], _content_type=JSON_PATCH)
    assert out["spec"] == {"hostnames": ["a.example", "b.example"], "timeout": "10s",
                           "idleTimeout": "10s"}
    assert out["metadata"]["labels"] == {"b": "2"}


def test_json_patch_failing_test_op_is_422_and_changes_nothing(custom, one_route):
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(G, V, "default", P, "r", [
            {"op": "replace", "path": "/spec/timeout", "value": "1s"},
            {"op": "test", "path": "/spec/timeout", "value": "5s"}], _content_type=JSON_PATCH)
    assert err.value.status == 422
    got = custom.get_namespaced_custom_object(G, V, "default", P, "r")
    assert got["metadata"]["resourceVersion"] == one_route["metadata"]["resourceVersion"]


def test_patch_carrying_a_stale_resource_version_is_409(custom, one_route):
    custom.patch_namespaced_custom_object(G, V, "default", P, "r", {"spec": {"timeout": "1s"}})
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(G, V, "default", P, "r", {
            "metadata": {"resourceVersion": one_route["metadata"]["resourceVersion"]},
            "spec": {"timeout": "2s"}})
    assert err.value.status == 409
    assert json.loads(err.value.body)["reason"] == "Conflict"
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(G, V, "default", P, "r", [
            {"op": "test", "path": "/metadata/resourceVersion",
             "value": one_route["metadata"]["resourceVersion"]}], _content_type=JSON_PATCH)
    assert err.value.status == 422


def test_patch_of_a_missing_object_is_404(custom, core):
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(G, V, "default", P, "nope", {"spec": {}})
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:  # even for leases, which PUT may create
        core.patch_namespaced_config_map("nope", "default", {"data": {}})
    assert err.value.status == 404


def test_status_patch_changes_only_status(custom, one_route):
    out = custom.patch_namespaced_custom_object_status(G, V, "default", P, "r", {
        "status": {"parents": [{"controllerName": "fluxgate.io/gateway"}]},
        "spec": {"timeout": "99s"}})
    assert out["status"] == {"parents": [{"controllerName": "fluxgate.io/gateway"}]}
    assert out["spec"]["timeout"] == "5s"
    assert out["metadata"]["generation"] == 1
    main = custom.patch_namespaced_custom_object(G, V, "default", P, "r", {"status": None})
    assert main["status"] == out["status"]  # the main resource cannot touch status


def test_strategic_merge_patch_merges_service_ports_by_port(core):
    core.create_namespaced_service("default", {"metadata": {"name": "web"}, "spec": {
        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}})
    # the client sends dict bodies to built-ins as strategic-merge-patch+json
    out = core.patch_namespaced_service("web", "default", {"spec": {"ports": [
        {"port": 80, "targetPort": 8080}, {"port": 9090, "name": "metrics"}]}})
    assert [(p.port, p.name, p.target_port) for p in out.spec.ports] == [
        (80, "http", 8080), (443, "https", 443), (9090, "metrics", 9090)]
    out = core.patch_namespaced_service("web", "default", {"spec": {"ports": [
        {"port": 443, "$patch": "delete"}]}})
    assert [p.port for p in out.spec.ports] == [80, 9090]


def test_strategic_merge_patch_is_415_for_custom_resources(custom, one_route):
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(
            G, V, "default", P, "r", {"spec": {}},
            _content_type="application/strategic-merge-patch+json")
    assert err.value.status == 415
    assert json.loads(err.value.body)["reason"] == "UnsupportedMediaType"


def test_apply_patch_creates_then_merges_and_needs_a_field_manager(custom):
    body = {"apiVersion": f"{G}/{V}", "kind": "FluxGateRoute", "metadata": {"name": "applied"},
            "spec": {"hostnames": ["a.example"]}}
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(G, V, "default", P, "applied", body,
                                              _content_type="application/apply-patch+yaml")
    assert err.value.status == 400
    resp = custom.patch_namespaced_custom_object(
        G, V, "default", P, "applied", body, field_manager="test",
        _content_type="application/apply-patch+yaml", _preload_content=False)
    assert resp.status == 201  # created (the client's typed call returns None for a 201 here)
    assert json.loads(resp.data)["metadata"]["generation"] == 1
    body["spec"]["timeout"] = "3s"
    again = custom.patch_namespaced_custom_object(
        G, V, "default", P, "applied", body, field_manager="test",
        _content_type="application/apply-patch+yaml")
    assert again["spec"] == {"hostnames": ["a.example"], "timeout": "3s"}


def test_patch_helpers_follow_their_rfcs():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None}, "d": [1]}) == {
        "a": {"c": 2}, "d": [1]}
    assert merge_patch({"a": 1}, ["x"]) == ["x"]
    added = json_patch({"a": [1, 2]}, [{"op": "add", "path": "/a/0", "value": 0}])
    assert added == {"a": [0, 1, 2]}
    assert json_patch({"a/b": {"~c": 1}}, [{"op": "remove", "path": "/a~1b/~0c"}]) == {"a/b": {}}
    with pytest.raises(ValueError):
        json_patch({}, [{"op": "frobnicate", "path": "/a"}])
    replaced = strategic_merge_patch({"spec": {"x": 1, "y": 2}},
                                     {"spec": {"$patch": "replace", "z": 3}})
    assert replaced == {"spec": {"z": 3}}
