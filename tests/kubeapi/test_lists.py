"""Lists: selectors, resourceVersion semantics, paging, typed and custom items."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException

G, V, P = "fluxgate.io", "v1alpha3", "fluxgateroutes"

LABELS = {
    "a": {"app": "web", "tier": "front", "rank": "3"},
    "b": {"app": "web", "tier": "back"},
    "c": {"app": "db"},
    "d": {},
}


@pytest.fixture
def labelled(core):
    for name, labels in LABELS.items():
        core.create_namespaced_config_map("default", {"metadata": {"name": name,
                                                                   "labels": labels}})
    return core


@pytest.mark.parametrize("selector, names", [
    ("", "abcd"),
    ("app=web", "ab"),
    ("app==web", "ab"),
    ("app!=web", "cd"),
    ("app in (web, db)", "abc"),
    ("app notin (web)", "cd"),
    ("tier", "ab"),
    ("!tier", "cd"),
    ("app=web,tier=front", "a"),
    ("app=web, !tier", ""),
    ("rank>2", "a"),
    ("rank<3", ""),
])
def test_list_label_selector(labelled, selector, names):
    items = labelled.list_namespaced_config_map("default", label_selector=selector).items
    assert "".join(i.metadata.name for i in items) == names


@pytest.mark.parametrize("selector", ["app=", "=web", "app in web", "app in (web", "a b",
                                      "app=web,", "-bad-=x"])
def test_malformed_label_selector_is_400(labelled, selector):
    if selector == "app=":  # an empty value is allowed: matches nothing here
        assert labelled.list_namespaced_config_map("default", label_selector=selector).items == []
        return
    with pytest.raises(ApiException) as err:
        labelled.list_namespaced_config_map("default", label_selector=selector)
    assert err.value.status == 400
    assert json.loads(err.value.body)["reason"] == "BadRequest"


@pytest.mark.parametrize("selector, names", [
    ("metadata.name=b", "b"),
    ("metadata.name==b", "b"),
    ("metadata.name!=b", "acd"),
    ("metadata.namespace=default", "abcd"),
    ("metadata.labels.app=web", "ab"),
    ("metadata.labels.tier!=front", "bcd"),
    ("metadata.name!=a,metadata.name!=b", "cd"),
])
def test_list_field_selector(labelled, selector, names):
    items = labelled.list_namespaced_config_map("default", field_selector=selector).items
    assert "".join(i.metadata.name for i in items) == names


def test_field_selector_on_spec_fields_of_custom_resources(custom):
    for name, host in (("a", "x.example"), ("b", "y.example")):
        custom.create_namespaced_custom_object(G, V, "default", P, {
            "apiVersion": f"{G}/{V}", "kind": "FluxGateRoute", "metadata": {"name": name},
            "spec": {"host": host, "enabled": True}})
    got = custom.list_namespaced_custom_object(G, V, "default", P,
                                               field_selector="spec.host=y.example")
    assert [i["metadata"]["name"] for i in got["items"]] == ["b"]
    got = custom.list_namespaced_custom_object(G, V, "default", P,
                                               field_selector="spec.enabled=true")
    assert len(got["items"]) == 2


def test_strict_field_selectors_refuse_unindexed_fields():
    from kubernetes import client

    from tests.kubeapi import KubeAPIServer
    with KubeAPIServer(strict_field_selectors=True) as server:
        configuration = client.Configuration()
        configuration.host = server.url
        with client.ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            assert core.list_namespaced_secret("default", field_selector="type=Opaque").items == []
            with pytest.raises(ApiException) as err:
                core.list_namespaced_config_map("default", field_selector="data.x=y")
            assert err.value.status == 400
            assert "field label not supported: data.x" in err.value.body


def test_list_carries_the_current_resource_version_and_kind(core, custom, kube):
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    listed = core.list_namespaced_config_map("default")
    assert listed.kind == "ConfigMapList" and listed.api_version == "v1"
    assert listed.metadata.resource_version == str(kube.resource_version)
    custom.create_namespaced_custom_object(G, V, "default", P, {
        "apiVersion": f"{G}/{V}", "kind": "FluxGateRoute", "metadata": {"name": "r"}})
    routes = custom.list_namespaced_custom_object(G, V, "default", P)
    assert routes["kind"] == "FluxGateRouteList" and routes["apiVersion"] == f"{G}/{V}"
    assert routes["metadata"]["resourceVersion"] == str(kube.resource_version)
    # custom resource items carry kind and apiVersion ...
    assert routes["items"][0]["kind"] == "FluxGateRoute"
    assert routes["items"][0]["apiVersion"] == f"{G}/{V}"
    # ... typed built-in list items do not, as with the real server
    raw = json.loads(core.list_namespaced_config_map("default", _preload_content=False).data)
    assert "kind" not in raw["items"][0] and "apiVersion" not in raw["items"][0]


def test_all_namespaces_list(core):
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_config_map("other", {"metadata": {"name": "x"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "y"}})
    items = core.list_config_map_for_all_namespaces().items
    assert [(i.metadata.namespace, i.metadata.name) for i in items] == [("default", "y"),
                                                                       ("other", "x")]


def test_paging_with_limit_and_continue_is_a_consistent_snapshot(core):
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    page = core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in page.items] == ["c0", "c1"]
    assert page.metadata.remaining_item_count == 3
    core.delete_namespaced_config_map("c3", "default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "c9"}})
    names = []
    token = page.metadata._continue
    while token:
        page2 = core.list_namespaced_config_map("default", limit=2, _continue=token)
        assert page2.metadata.resource_version == page.metadata.resource_version
        names += [i.metadata.name for i in page2.items]
        token = page2.metadata._continue
    assert names == ["c2", "c3", "c4"]  # as of the first page: c3 still there, no c9


def test_continue_token_older_than_the_history_is_410(core, kube):
    for i in range(3):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    page = core.list_namespaced_config_map("default", limit=1)
    core.create_namespaced_config_map("default", {"metadata": {"name": "later"}})
    kube.compact()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", limit=1, _continue=page.metadata._continue)
    assert err.value.status == 410
    assert json.loads(err.value.body)["reason"] == "Expired"


def test_exact_list_returns_the_state_at_that_version_until_compacted(core, kube):
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}, "data": {"v": "1"}})
    then = str(kube.resource_version)
    core.patch_namespaced_config_map("a", "default", {"data": {"v": "2"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    old = core.list_namespaced_config_map("default", resource_version=then,
                                          resource_version_match="Exact")
    assert old.metadata.resource_version == then
    assert [(i.metadata.name, i.data) for i in old.items] == [("a", {"v": "1"})]
    newest = core.list_namespaced_config_map("default", resource_version=then,
                                             resource_version_match="NotOlderThan")
    assert [i.metadata.name for i in newest.items] == ["a", "b"]
    kube.compact()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", resource_version=then,
                                        resource_version_match="Exact")
    assert err.value.status == 410
    assert json.loads(err.value.body)["reason"] == "Expired"
    # without Exact an old version is "not older than": the current state, no error
    assert len(core.list_namespaced_config_map("default", resource_version=then).items) == 2


def test_list_from_a_future_version_is_504_too_large(core, kube):
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", resource_version=str(kube.resource_version + 5))
    body = json.loads(err.value.body)
    assert err.value.status == 504 and body["reason"] == "Timeout"
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
