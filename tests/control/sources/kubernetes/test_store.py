"""The store (control/sources/kubernetes/store.py), through the source: objects read
like the file source's, what counts as a change, and load() as a snapshot.
(changes() is tested with the cache in tests/control/test_incremental.py.)
"""

from __future__ import annotations

import copy

import pytest

from control.cache import ObjectCache
from control.sources.kubernetes import SERVICE
from control.sources.kubernetes.store import Store
from tests.control.sources.kubernetes.fixtures import GW, route, service, until


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


# --- the store alone (no API server) -------------------------------------------------------


def _service(name: str, rv: str) -> dict:
    obj = service(name)
    obj["metadata"]["resourceVersion"] = rv
    return obj


def test_store_same_resource_version_is_no_change():
    store = Store()
    bucket = store.bucket(SERVICE)
    assert store.replace(bucket, {("default", "web"): _service("web", "1")})
    generation = store.generation
    assert not store.replace(bucket, {("default", "web"): _service("web", "1")})
    assert not store.event(bucket, "MODIFIED", _service("web", "1"))
    assert store.generation == generation
    assert store.event(bucket, "MODIFIED", _service("web", "2"))
    assert store.generation == generation + 1


def test_store_replace_drops_what_the_list_no_longer_has():
    store = Store()
    bucket = store.bucket(SERVICE)
    store.replace(bucket, {("default", "a"): _service("a", "1"), ("default", "b"): _service("b", "1")})
    store.changes()
    assert store.replace(bucket, {("default", "b"): _service("b", "1")})
    changes = store.changes()
    assert [o.name for o in changes.deletes] == ["a"] and changes.upserts == []
    assert [o.name for o in store.load().objects] == ["b"]


def test_store_keep_drops_a_rejected_object_as_if_deleted():
    store = Store()
    bucket = store.bucket(SERVICE, keep=lambda raw: raw["spec"]["ports"][0]["port"] == 80)
    assert store.event(bucket, "ADDED", _service("web", "1"))
    moved = _service("web", "2")
    moved["spec"]["ports"][0]["port"] = 8080
    assert store.event(bucket, "MODIFIED", moved)
    assert store.load().objects == []
    assert [o.name for o in store.changes().deletes] == ["web"]


def test_store_cleans_objects_on_arrival():
    raw = {"metadata": {"name": "web", "managedFields": [{"manager": "kubectl"}]}}
    cleaned = Store.clean(SERVICE, raw)
    assert (cleaned["apiVersion"], cleaned["kind"]) == ("v1", "Service")
    assert "managedFields" not in cleaned["metadata"]
    with pytest.raises(ValueError, match="Service without metadata.name"):
        Store.clean(SERVICE, {"metadata": {"name": 7}})
