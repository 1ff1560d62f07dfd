"""The in-process helpers tests use to arrange a cluster (what a real server lacks)."""

from __future__ import annotations

import threading

import pytest
import urllib3
from kubernetes import client, watch

from tests.kubeapi import KubeAPIServer


def test_apply_creates_then_replaces_and_writes_status(kube, custom):
    route = {"apiVersion": "fluxgate.io/v1alpha3", "kind": "FluxGateRoute",
             "metadata": {"name": "r", "namespace": "team"}, "spec": {"hostnames": ["a"]},
             "status": {"parents": []}}
    first = kube.apply(route)
    assert first["status"] == {"parents": []} and first["metadata"]["generation"] == 1
    route["spec"] = {"hostnames": ["b"]}
    second = kube.apply(route)
    assert second["metadata"]["generation"] == 2
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    got = custom.get_namespaced_custom_object("fluxgate.io", "v1alpha3", "team", "fluxgateroutes",
                                              "r")
    assert got["spec"] == {"hostnames": ["b"]} and got["status"] == {"parents": []}
    assert kube.get("v1", "Namespace", "team")["status"]["phase"] == "Active"


def test_apply_yaml_get_list_and_delete(kube):
    applied = kube.apply_yaml("""
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: other}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: fluxgate}
spec: {controller: fluxgate.io/gateway}
""")
    assert [o["metadata"]["name"] for o in applied] == ["a", "b", "fluxgate"]
    assert kube.get("v1", "ConfigMap", "a")["metadata"]["namespace"] == "default"
    assert [o["metadata"]["name"] for o in kube.list("v1", "ConfigMap")] == ["a", "b"]
    assert [o["metadata"]["name"] for o in kube.list("v1", "ConfigMap", "other")] == ["b"]
    assert kube.delete("v1", "ConfigMap", "a") is True
    assert kube.delete("v1", "ConfigMap", "a") is False
    assert kube.get("v1", "ConfigMap", "a") is None
    with pytest.raises(KeyError):
        kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})


def test_helpers_hand_out_copies(kube):
    obj = kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
                      "data": {"k": "v"}})
    obj["data"]["k"] = "changed"
    kube.get("v1", "ConfigMap", "a")["data"]["k"] = "changed"
    assert kube.get("v1", "ConfigMap", "a")["data"] == {"k": "v"}


def test_stop_ends_open_watches_and_is_idempotent():
    server = KubeAPIServer().start()
    configuration = client.Configuration()
    configuration.host = server.url
    api = client.ApiClient(configuration)
    outcome = []

    def run():
        try:
            for _ in watch.Watch().stream(client.CoreV1Api(api).list_namespaced_config_map,
                                          "default"):
                pass
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert server.wait_for_watches(1)
    server.stop()
    server.stop()
    thread.join(timeout=5)
    api.close()
    assert not thread.is_alive()
    assert isinstance(outcome[0], (urllib3.exceptions.ProtocolError,
                                   urllib3.exceptions.MaxRetryError))


def test_watch_timeout_option_ends_watches_without_timeout_seconds():
    with KubeAPIServer(watch_timeout=0.3) as server:
        configuration = client.Configuration()
        configuration.host = server.url
        with client.ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            response = core.list_namespaced_config_map("default", watch=True,
                                                        _preload_content=False)
            assert response.read() == b""  # ended cleanly, nothing happened
