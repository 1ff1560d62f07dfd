"""Create, get, update, delete and their metadata rules, through the real client."""

from __future__ import annotations

import base64
import json
import re

import pytest
from kubernetes import client
from kubernetes.client import ApiException

G, V = "fluxgate.io", "v1alpha3"
GW = "gateway.networking.k8s.io"


def route(name: str, **spec) -> dict:
    return {"apiVersion": f"{G}/{V}", "kind": "FluxGateRoute",
            "metadata": {"name": name}, "spec": spec or {"hostnames": ["a.example"]}}


def status_of(e: ApiException) -> dict:
    return json.loads(e.body)


def test_create_stamps_uid_timestamp_resource_version_and_generation(custom):
    obj = custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", route("r"))
    meta = obj["metadata"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        meta["uid"])
    assert re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["resourceVersion"].isdigit()
    assert meta["generation"] == 1
    assert meta["namespace"] == "default"
    assert obj["kind"] == "FluxGateRoute" and obj["apiVersion"] == f"{G}/{V}"


def test_resource_versions_grow_from_one_counter_across_kinds(core, custom):
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    b = custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", route("b"))
    c = core.create_namespaced_secret("default", {"metadata": {"name": "c"}})
    versions = [int(a.metadata.resource_version), int(b["metadata"]["resourceVersion"]),
                int(c.metadata.resource_version)]
    assert versions == sorted(versions) and len(set(versions)) == 3
    listed = core.list_namespaced_config_map("default")
    assert int(listed.metadata.resource_version) == versions[-1]


def test_create_of_an_existing_name_is_409_already_exists(core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    status = status_of(err.value)
    assert err.value.status == 409
    assert status["kind"] == "Status" and status["reason"] == "AlreadyExists"
    assert status["details"] == {"name": "x", "kind": "configmaps"}
    assert status["message"] == 'configmaps "x" already exists'


def test_get_of_a_missing_object_is_404_with_a_status_body(custom):
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object(G, V, "default", "fluxgateroutes", "nope")
    assert err.value.status == 404
    assert status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'fluxgateroutes.fluxgate.io "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "fluxgate.io", "kind": "fluxgateroutes"},
        "code": 404}


def test_namespace_in_body_differing_from_url_is_400(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "x",
                                                                   "namespace": "other"}})
    assert err.value.status == 400
    assert status_of(err.value)["reason"] == "BadRequest"


def test_create_in_a_missing_namespace_is_404_namespace_not_found(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "x"}})
    assert err.value.status == 404
    assert status_of(err.value)["details"] == {"name": "nowhere", "kind": "namespaces"}


def test_name_is_required_and_must_be_a_dns_name(core, custom):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {}})
    assert err.value.status == 422
    status = status_of(err.value)
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", route("Bad_Name"))
    assert err.value.status == 422
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("default", {"metadata": {"name": "1abc"}})
    assert err.value.status == 422  # Service names are DNS-1035 labels


def test_generate_name_makes_a_fresh_name(core):
    a = core.create_namespaced_config_map("default", {"metadata": {"generateName": "cfg-"}})
    b = core.create_namespaced_config_map("default", {"metadata": {"generateName": "cfg-"}})
    assert a.metadata.name.startswith("cfg-") and len(a.metadata.name) == 9
    assert a.metadata.name != b.metadata.name


def test_create_with_a_resource_version_is_refused(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "x",
                                                                   "resourceVersion": "3"}})
    assert err.value.status == 500
    assert "resourceVersion should not be set" in status_of(err.value)["message"]


def test_update_with_a_stale_resource_version_is_409_conflict(custom):
    obj = custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", route("r"))
    obj["spec"] = {"hostnames": ["b.example"]}
    custom.replace_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r", obj)
    obj["spec"] = {"hostnames": ["c.example"]}  # still the first resourceVersion
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r", obj)
    status = status_of(err.value)
    assert err.value.status == 409 and status["reason"] == "Conflict"
    assert status["message"].startswith(
        'Operation cannot be fulfilled on fluxgateroutes.fluxgate.io "r": the object has been '
        "modified")


def test_update_without_resource_version_is_unconditional(core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "x"}, "data": {"a": "1"}})
    out = core.replace_namespaced_config_map("x", "default",
                                             {"metadata": {"name": "x"}, "data": {"a": "2"}})
    assert out.data == {"a": "2"}


def test_update_name_differing_from_url_is_400(core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("x", "default", {"metadata": {"name": "y"}})
    assert err.value.status == 400


def test_update_of_a_missing_object_is_404(core):
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("x", "default", {"metadata": {"name": "x"}})
    assert err.value.status == 404


def test_update_that_changes_nothing_keeps_the_resource_version(custom):
    obj = custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", route("r"))
    again = custom.replace_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r", obj)
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_generation_grows_only_when_the_spec_changes(custom):
    obj = custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", route("r"))
    obj["metadata"]["labels"] = {"a": "b"}
    obj = custom.replace_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r", obj)
    assert obj["metadata"]["generation"] == 1
    obj = custom.replace_namespaced_custom_object_status(
        G, V, "default", "fluxgateroutes", "r", dict(obj, status={"parents": []}))
    assert obj["metadata"]["generation"] == 1
    obj["spec"] = {"hostnames": ["other.example"]}
    obj = custom.replace_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r", obj)
    assert obj["metadata"]["generation"] == 2


def test_kinds_without_generation_have_none(core):
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    assert cm.metadata.generation is None


def test_main_update_ignores_status_and_status_update_changes_only_status(custom):
    obj = route("r")
    obj["status"] = {"parents": [{"controllerName": "x"}]}
    created = custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", obj)
    assert "status" not in created  # create cannot set status
    created["status"] = {"parents": [{"controllerName": "y"}]}
    updated = custom.replace_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r",
                                                      created)
    assert "status" not in updated
    updated["status"] = {"parents": [{"controllerName": "fluxgate"}]}
    updated["spec"] = {"hostnames": ["ignored.example"]}
    updated["metadata"]["labels"] = {"ignored": "yes"}
    written = custom.replace_namespaced_custom_object_status(G, V, "default", "fluxgateroutes",
                                                             "r", updated)
    assert written["status"] == {"parents": [{"controllerName": "fluxgate"}]}
    assert written["spec"] == {"hostnames": ["a.example"]}
    assert "labels" not in written["metadata"]
    assert custom.get_namespaced_custom_object_status(
        G, V, "default", "fluxgateroutes", "r")["status"] == written["status"]


def test_status_update_with_a_stale_resource_version_is_409(custom):
    obj = custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", route("r"))
    custom.replace_namespaced_custom_object_status(
        G, V, "default", "fluxgateroutes", "r", dict(obj, status={"parents": []}))
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object_status(
            G, V, "default", "fluxgateroutes", "r", dict(obj, status={"parents": [{}]}))
    assert err.value.status == 409


def test_delete_answers_a_status_for_config_maps_and_the_object_for_services(core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    out = core.delete_namespaced_config_map("x", "default")
    status = out if isinstance(out, dict) else out.to_dict()
    assert status["status"] == "Success" and status["details"]["name"] == "x"
    core.create_namespaced_service("default", {"metadata": {"name": "web"},
                                               "spec": {"ports": [{"port": 80}]}})
    svc = core.delete_namespaced_service("web", "default")
    assert isinstance(svc, client.V1Service) and svc.metadata.name == "web"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_service("web", "default")
    assert err.value.status == 404


def test_delete_with_a_failed_precondition_is_409(core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    body = {"preconditions": {"resourceVersion": "1"}}
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_config_map("x", "default", body=body)
    assert err.value.status == 409
    assert "Precondition failed" in status_of(err.value)["message"]


def test_finalizers_hold_deletion_until_they_are_removed(custom):
    obj = route("r")
    obj["metadata"]["finalizers"] = ["fluxgate.io/cleanup"]
    custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", obj)
    deleting = custom.delete_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r")
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == 2
    current = custom.get_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r")
    current["metadata"]["finalizers"] = ["fluxgate.io/cleanup", "another"]
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r", current)
    assert err.value.status == 422
    current["metadata"]["finalizers"] = []
    custom.replace_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r", current)
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object(G, V, "default", "fluxgateroutes", "r")
    assert err.value.status == 404


def test_deleting_a_namespace_deletes_what_is_in_it(core, custom):
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_config_map("team", {"metadata": {"name": "x"}})
    custom.create_namespaced_custom_object(G, V, "team", "fluxgateroutes", route("r"))
    core.delete_namespace("team")
    assert core.list_namespaced_config_map("team").items == []
    assert custom.list_namespaced_custom_object(G, V, "team", "fluxgateroutes")["items"] == []
    assert "team" not in [n.metadata.name for n in core.list_namespace().items]


def test_namespaces_carry_their_name_label_and_are_active(core):
    ns = core.create_namespace({"metadata": {"name": "team"}})
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "team"}
    assert ns.status.phase == "Active"
    assert ns.metadata.namespace is None


def test_cluster_scoped_kinds_have_no_namespace(networking, custom):
    ic = networking.create_ingress_class({"metadata": {"name": "fluxgate", "namespace": "x"},
                                          "spec": {"controller": "fluxgate.io/gateway"}})
    assert ic.metadata.namespace is None and ic.metadata.generation == 1
    gc = custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
        "apiVersion": f"{GW}/v1", "kind": "GatewayClass", "metadata": {"name": "fluxgate"},
        "spec": {"controllerName": "fluxgate.io/gateway"}})
    assert "namespace" not in gc["metadata"]
    assert custom.get_cluster_custom_object(GW, "v1", "gatewayclasses", "fluxgate")


def test_secret_string_data_is_stored_base64_in_data(core):
    secret = core.create_namespaced_secret("default", {"metadata": {"name": "s"},
                                                       "stringData": {"token": "abc"}})
    assert secret.type == "Opaque"
    assert secret.data == {"token": base64.b64encode(b"abc").decode()}
    assert secret.string_data is None


def test_service_gets_a_cluster_ip_that_updates_keep(core):
    svc = core.create_namespaced_service("default", {"metadata": {"name": "web"},
                                                     "spec": {"ports": [{"port": 80}]}})
    assert svc.spec.type == "ClusterIP" and svc.spec.cluster_ip.startswith("10.96.")
    assert svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 80
    replaced = core.replace_namespaced_service("web", "default", {
        "metadata": {"name": "web"}, "spec": {"ports": [{"port": 8080}]}})
    assert replaced.spec.cluster_ip == svc.spec.cluster_ip
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_service("web", "default", {
            "metadata": {"name": "web"}, "spec": {"clusterIP": "10.0.0.9", "ports": [{"port": 1}]}})
    assert err.value.status == 422


def test_node_port_services_get_node_ports_that_updates_keep(core):
    svc = core.create_namespaced_service("default", {"metadata": {"name": "np"}, "spec": {
        "type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}})
    ports = [p.node_port for p in svc.spec.ports]
    assert all(30000 <= p <= 32767 for p in ports) and len(set(ports)) == 2
    again = core.patch_namespaced_service("np", "default", {"metadata": {"labels": {"a": "b"}}})
    assert [p.node_port for p in again.spec.ports] == ports


def test_leases_serialise_leader_election_by_resource_version(api_client, leases):
    lease = leases.create_namespaced_lease("kube-system", {
        "metadata": {"name": "fluxgate-controller"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    first = client.V1Lease(metadata=lease.metadata, spec=client.V1LeaseSpec(
        holder_identity="b", lease_duration_seconds=15))
    second = client.V1Lease(metadata=lease.metadata, spec=client.V1LeaseSpec(
        holder_identity="c", lease_duration_seconds=15))
    leases.replace_namespaced_lease("fluxgate-controller", "kube-system", first)
    with pytest.raises(ApiException) as err:
        leases.replace_namespaced_lease("fluxgate-controller", "kube-system", second)
    assert err.value.status == 409
    assert leases.read_namespaced_lease("fluxgate-controller",
                                        "kube-system").spec.holder_identity == "b"


def test_lease_put_creates_a_missing_lease(leases):
    lease = leases.replace_namespaced_lease("l", "default", {
        "metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})
    assert lease.spec.holder_identity == "a" and lease.metadata.uid


def test_endpoint_slices_and_ingresses_round_trip(slices, networking):
    es = slices.create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    assert es.endpoints[0].addresses == ["10.0.0.1"] and es.metadata.generation == 1
    ing = networking.create_namespaced_ingress("default", {
        "metadata": {"name": "web"},
        "spec": {"ingressClassName": "fluxgate", "rules": [{"host": "a.example", "http": {
            "paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": "web", "port": {"number": 80}}}}]}}]}})
    assert ing.spec.rules[0].host == "a.example"
    assert ing.status.load_balancer is not None


def test_dry_run_validates_but_stores_nothing(core):
    out = core.create_namespaced_config_map("default", {"metadata": {"name": "x"}},
                                            dry_run="All")
    assert out.metadata.name == "x"
    assert core.list_namespaced_config_map("default").items == []


def test_delete_collection_deletes_what_the_selector_picks(core):
    for name, team in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map("default", {"metadata": {"name": name,
                                                                   "labels": {"team": team}}})
    core.delete_collection_namespaced_config_map("default", label_selector="team=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map("default").items] == ["c"]


def test_http_route_is_served_at_v1_and_v1beta1(custom):
    custom.create_namespaced_custom_object(GW, "v1", "default", "httproutes", {
        "apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
        "spec": {"parentRefs": [{"name": "gw"}]}})
    old = custom.get_namespaced_custom_object(GW, "v1beta1", "default", "httproutes", "r")
    assert old["apiVersion"] == f"{GW}/v1beta1"


def test_body_of_another_kind_is_400(custom):
    body = route("r")
    body["kind"] = "FluxGatePolicy"
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(G, V, "default", "fluxgateroutes", body)
    assert err.value.status == 400
