"""Discovery documents, /version, and CRDs appearing in (and leaving) discovery."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, dynamic
from kubernetes.client import ApiException

GW = "gateway.networking.k8s.io"


def widget_crd(versions=("v1",), scope="Namespaced") -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": scope,
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                           "shortNames": ["wd"]},
                 "versions": [{"name": v, "served": True, "storage": i == 0,
                               "schema": {"openAPIV3Schema": {
                                   "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                               "subresources": {"status": {}}}
                              for i, v in enumerate(versions)]}}


def test_core_api_versions(api_client, kube):
    versions = client.CoreApi(api_client).get_api_versions()
    assert versions.versions == ["v1"]
    assert versions.server_address_by_client_cidrs[0].server_address == f"127.0.0.1:{kube.port}"


def test_core_v1_resources_include_status_subresources(core):
    resources = {r.name: r for r in core.get_api_resources().resources}
    assert resources["services"].kind == "Service" and resources["services"].namespaced
    assert resources["services"].short_names == ["svc"]
    assert set(resources["services"].verbs) >= {"get", "list", "watch", "create", "update",
                                                "patch", "delete"}
    assert resources["services/status"].verbs == ["get", "patch", "update"]
    assert resources["namespaces"].namespaced is False
    assert {"secrets", "configmaps", "endpoints"} <= set(resources)


def test_group_list_has_builtin_gateway_api_and_fluxgate_groups(api_client):
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    for name in ("discovery.k8s.io", "networking.k8s.io", "coordination.k8s.io",
                 "apiextensions.k8s.io", GW, "fluxgate.io"):
        assert name in groups
    assert groups[GW].preferred_version.version == "v1"
    assert [v.version for v in groups[GW].versions] == ["v1", "v1beta1"]
    assert groups["fluxgate.io"].preferred_version.group_version == "fluxgate.io/v1alpha3"


def test_group_and_group_version_documents(api_client):
    group = client.NetworkingApi(api_client).get_api_group()
    assert group.name == "networking.k8s.io" and group.preferred_version.version == "v1"
    resources = client.NetworkingV1Api(api_client).get_api_resources()
    assert resources.group_version == "networking.k8s.io/v1"
    names = {r.name: r for r in resources.resources}
    assert names["ingressclasses"].namespaced is False
    assert "ingresses/status" in names
    leases = client.CoordinationV1Api(api_client).get_api_resources()
    assert [r.name for r in leases.resources] == ["leases"]


def test_dynamic_client_discovers_gateway_api_and_fluxgate_kinds(api_client):
    dyn = dynamic.DynamicClient(api_client)
    routes = dyn.resources.get(api_version=f"{GW}/v1", kind="HTTPRoute")
    assert routes.namespaced and "status" in routes.subresources
    grants = dyn.resources.get(api_version=f"{GW}/v1beta1", kind="ReferenceGrant")
    assert grants.name == "referencegrants" and "status" not in grants.subresources
    classes = dyn.resources.get(api_version=f"{GW}/v1", kind="GatewayClass")
    assert classes.namespaced is False
    for kind in ("FluxGateRoute", "FluxGatePolicy", "FluxGateAuth"):
        assert dyn.resources.get(api_version="fluxgate.io/v1alpha3", kind=kind).namespaced
    created = routes.create(namespace="default", body={
        "apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": {"name": "r"}, "spec": {}})
    assert created.metadata.name == "r"


def test_version_document(api_client):
    info = client.VersionApi(api_client).get_code()
    assert info.major == "1" and info.git_version.startswith("v1.")


def test_unknown_group_version_and_resource_are_404_status(api_client, kube):
    for path in ("/apis/nope.example.com", "/apis/nope.example.com/v1",
                 "/apis/fluxgate.io/v9/fluxgateroutes", "/api/v1/nothings"):
        resp = api_client.call_api("GET", kube.url + path)
        resp.read()
        with pytest.raises(ApiException) as err:
            api_client.response_deserialize(resp, {"200": "object"})
        assert err.value.status == 404, path
        assert json.loads(err.value.body)["kind"] == "Status"


def test_a_new_crd_is_discovered_and_served_and_leaves_when_deleted(api_client, apiext, custom,
                                                                   streams):
    apiext.create_custom_resource_definition(widget_crd(versions=("v1", "v1beta1")))
    watching = streams(custom.list_namespaced_custom_object, "example.com", "v1", "default",
                       "widgets")
    crd = apiext.read_custom_resource_definition("widgets.example.com")
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert "example.com" in groups
    dyn = dynamic.DynamicClient(api_client)
    widgets = dyn.resources.get(api_version="example.com/v1", kind="Widget")
    assert widgets.short_names == ["wd"]
    custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert custom.get_namespaced_custom_object("example.com", "v1beta1", "default", "widgets",
                                               "w")["apiVersion"] == "example.com/v1beta1"
    assert watching.next()["type"] == "ADDED"
    apiext.delete_custom_resource_definition("widgets.example.com")
    assert watching.next()["type"] == "DELETED"
    ended = watching.next()  # the watch ends; the client's resume finds no such resource
    assert isinstance(ended, ApiException) and ended.status == 404
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert "example.com" not in groups
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert err.value.status == 404
    # a CRD created again starts empty: its objects went with it
    apiext.create_custom_resource_definition(widget_crd())
    assert custom.list_namespaced_custom_object("example.com", "v1", "default",
                                                "widgets")["items"] == []


def test_crd_name_must_be_plural_dot_group(apiext):
    crd = widget_crd()
    crd["metadata"]["name"] = "widget.example.com"
    with pytest.raises(ApiException) as err:
        apiext.create_custom_resource_definition(crd)
    assert err.value.status == 422


def test_preinstalled_crds_are_listed(apiext):
    names = {c.metadata.name for c in apiext.list_custom_resource_definition().items}
    assert {"httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
            "gatewayclasses.gateway.networking.k8s.io",
            "referencegrants.gateway.networking.k8s.io", "fluxgateroutes.fluxgate.io",
            "fluxgatepolicies.fluxgate.io", "fluxgateauths.fluxgate.io"} <= names
