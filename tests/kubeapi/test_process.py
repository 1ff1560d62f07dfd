"""``python -m tests.kubeapi --port 0`` as a child process, stopped by its pid."""

from __future__ import annotations

import os

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiException

from tests.kubeapi import KubeAPIProcess, client_for


@pytest.fixture
def proc():
    p = KubeAPIProcess("--bookmark-interval", "0.2").start()
    yield p
    p.stop()


@pytest.fixture
def core(proc):
    with client_for(proc.url) as api:
        yield client.CoreV1Api(api)


def test_process_prints_its_port_and_serves_the_api(proc, core):
    assert proc.port and proc.pid != os.getpid()
    assert "default" in [n.metadata.name for n in core.list_namespace().items]
    core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    assert core.read_namespaced_config_map("x", "default").metadata.uid


def test_process_helpers_apply_compact_and_drop_watches(proc, core):
    applied = proc.apply({"apiVersion": "fluxgate.io/v1alpha3", "kind": "FluxGateRoute",
                          "metadata": {"name": "r", "namespace": "team"}, "spec": {},
                          "status": {"parents": []}})
    assert applied["metadata"]["namespace"] == "team" and applied["status"] == {"parents": []}
    old = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    proc.compact()
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                  resource_version=old, timeout_seconds=2))
    assert err.value.status == 410
    assert proc.watch_count == 0
    assert proc.drop_watches() == 0


def test_process_stops_on_sigterm_with_exit_code_zero():
    p = KubeAPIProcess().start()
    assert p.stop() == 0
