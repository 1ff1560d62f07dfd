"""Custom resources through their CRD schema: prune, default, validate (422)."""

from __future__ import annotations

import json
import textwrap

import pytest
from kubernetes.client import ApiException

GW = "gateway.networking.k8s.io"

GADGET_CRD = textwrap.dedent("""
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: gadgets.example.com}
    spec:
      group: example.com
      scope: Namespaced
      names: {plural: gadgets, singular: gadget, kind: Gadget}
      versions:
      - name: v1
        served: true
        storage: true
        subresources: {status: {}}
        schema:
          openAPIV3Schema:
            type: object
            required: [spec]
            properties:
              spec:
                type: object
                required: [size]
                properties:
                  size: {type: integer, minimum: 1, maximum: 10}
                  color: {type: string, enum: [red, blue], default: red}
                  name: {type: string, maxLength: 5, pattern: '^[a-z]+$'}
                  tags: {type: array, maxItems: 2, items: {type: string}}
                  extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
                  port: {x-kubernetes-int-or-string: true}
                  parts:
                    type: array
                    items:
                      type: object
                      properties:
                        kind: {type: string, default: Bolt}
              status:
                type: object
                properties:
                  ready: {type: boolean}
""")


@pytest.fixture
def gadgets(kube, custom):
    kube.apply_yaml(GADGET_CRD)

    def create(spec, name="g"):
        return custom.create_namespaced_custom_object("example.com", "v1", "default", "gadgets", {
            "apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": name},
            "spec": spec})
    return create


def test_unknown_fields_are_pruned_and_defaults_applied(gadgets):
    obj = gadgets({"size": 3, "bogus": 1, "extra": {"anything": {"goes": True}},
                   "parts": [{}, {"kind": "Nut", "junk": 1}]})
    assert obj["spec"] == {"size": 3, "color": "red", "extra": {"anything": {"goes": True}},
                           "parts": [{"kind": "Bolt"}, {"kind": "Nut"}]}


@pytest.mark.parametrize("spec, field, reason", [
    ({}, "spec.size", "FieldValueRequired"),
    ({"size": 0}, "spec.size", "FieldValueInvalid"),
    ({"size": "3"}, "spec.size", "FieldValueTypeInvalid"),
    ({"size": 1, "color": "green"}, "spec.color", "FieldValueNotSupported"),
    ({"size": 1, "name": "toolong"}, "spec.name", "FieldValueTooLong"),
    ({"size": 1, "name": "AB"}, "spec.name", "FieldValueInvalid"),
    ({"size": 1, "tags": ["a", "b", "c"]}, "spec.tags", "FieldValueTooMany"),
    ({"size": 1, "port": 1.5}, "spec.port", "FieldValueTypeInvalid"),
])
def test_schema_violations_are_422_invalid_with_causes(gadgets, spec, field, reason):
    with pytest.raises(ApiException) as err:
        gadgets(spec)
    status = json.loads(err.value.body)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    assert status["details"]["kind"] == "Gadget" and status["details"]["group"] == "example.com"
    assert (reason, field) in [(c["reason"], c["field"]) for c in status["details"]["causes"]]
    assert status["message"].startswith('Gadget.example.com "g" is invalid: ')


def test_int_or_string_accepts_both(gadgets):
    assert gadgets({"size": 1, "port": 80}, "a")["spec"]["port"] == 80
    assert gadgets({"size": 1, "port": "http"}, "b")["spec"]["port"] == "http"


def test_status_is_pruned_by_the_schema_too(gadgets, custom):
    gadgets({"size": 1})
    out = custom.patch_namespaced_custom_object_status(
        "example.com", "v1", "default", "gadgets", "g", {"status": {"ready": True, "junk": 1}})
    assert out["status"] == {"ready": True}


def test_replacing_a_crd_changes_the_schema_of_what_follows(kube, gadgets, custom):
    gadgets({"size": 1})
    kube.apply_yaml(GADGET_CRD.replace("minimum: 1", "minimum: 5"))
    with pytest.raises(ApiException) as err:
        gadgets({"size": 2}, "h")
    assert err.value.status == 422


def test_http_route_gets_gateway_api_defaults(custom):
    out = custom.create_namespaced_custom_object(GW, "v1", "default", "httproutes", {
        "apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["a.example"],
                 "rules": [{"matches": [{"path": {"value": "/api"}},
                                        {"headers": [{"name": "x", "value": "y"}]}],
                            "backendRefs": [{"name": "web", "port": 80}]}]}})
    spec = out["spec"]
    assert spec["parentRefs"] == [{"name": "gw", "group": GW, "kind": "Gateway"}]
    rule = spec["rules"][0]
    assert rule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/api"}
    assert rule["matches"][1] == {"headers": [{"name": "x", "value": "y", "type": "Exact"}],
                                  "path": {"type": "PathPrefix", "value": "/"}}
    assert rule["backendRefs"] == [{"name": "web", "port": 80, "group": "", "kind": "Service",
                                    "weight": 1}]
    bare = custom.create_namespaced_custom_object(GW, "v1", "default", "httproutes", {
        "apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": {"name": "bare"},
        "spec": {}})
    assert bare["spec"]["rules"] == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]


def test_gateway_and_class_start_with_pending_status_conditions(custom):
    gc = custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
        "apiVersion": f"{GW}/v1", "kind": "GatewayClass", "metadata": {"name": "fg"},
        "spec": {"controllerName": "fluxgate.io/gateway"}})
    assert [(c["type"], c["status"], c["reason"]) for c in gc["status"]["conditions"]] == [
        ("Accepted", "Unknown", "Pending")]
    gw = custom.create_namespaced_custom_object(GW, "v1", "default", "gateways", {
        "apiVersion": f"{GW}/v1", "kind": "Gateway", "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "fg",
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        "status": {"conditions": []}})  # create cannot set status
    assert [c["type"] for c in gw["status"]["conditions"]] == ["Accepted", "Programmed"]
    assert gw["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
