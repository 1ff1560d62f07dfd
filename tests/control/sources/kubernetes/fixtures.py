"""Fixtures and object builders for the Kubernetes source's tests.

The source runs against tests/kubeapi: the real client over real HTTP on
loopback. Each test starts its own API server (in-process) and source, and
the fixture finalisers stop both. Waits poll with a deadline; nothing sleeps a
fixed time to "let things settle" except where a test must show that nothing
happens.

conftest.py beside this file makes the fixtures visible to the tests here;
tests elsewhere (the controller's, the incremental cache's) import them.
"""

from __future__ import annotations

import base64
import time

import pytest
from kubernetes import client

from control.sources.kubernetes import KubernetesSource, Settings
from tests.kubeapi import KubeAPIServer
from tests.kubeapi.handler import HTTPServer

GW = "gateway.networking.k8s.io/v1"


@pytest.fixture(autouse=True)
def _backlog(monkeypatch):
    # socketserver listens with a backlog of 5; a real API server's is the
    # kernel's somaxconn. Eleven watches connecting at once would otherwise
    # wait out a SYN retransmit (1 s) now and then.
    monkeypatch.setattr(HTTPServer, "request_queue_size", 128)


@pytest.fixture
def servers():
    started: list[KubeAPIServer] = []

    def start(port: int = 0, **kwargs) -> KubeAPIServer:
        kwargs.setdefault("bookmark_interval", 0.2)
        kwargs.setdefault("rv_wait", 0.3)
        server = KubeAPIServer(**kwargs).start(port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def kube(servers):
    return servers()


@pytest.fixture
def sources():
    started: list[KubernetesSource] = []

    def start(url: str, settings: Settings = Settings(), wait: bool = True, **kwargs) -> KubernetesSource:
        configuration = client.Configuration()
        configuration.host = url
        kwargs.setdefault("backoff_base", 0.05)
        kwargs.setdefault("backoff_cap", 0.2)
        source = KubernetesSource(configuration, settings, **kwargs)
        started.append(source)
        source.start()
        if wait:
            until(lambda: source.synced, what="the initial lists")
        return source

    yield start
    for source in started:
        source.close()


def until(predicate, timeout: float = 5.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def keys(source: KubernetesSource, kind: str | None = None) -> set[tuple[str, str, str]]:
    return {(o.kind, o.namespace, o.name) for o in source.load().objects
            if kind is None or o.kind == kind}


def watch_of(source: KubernetesSource, text: str) -> dict:
    return next(d for d in source.describe() if d["watch"] == text)


def caught_up(source: KubernetesSource, kube: KubeAPIServer, watch: str) -> None:
    """Wait until ``watch`` has seen everything the server has written so far."""
    target = kube.resource_version
    until(lambda: int(watch_of(source, watch)["resourceVersion"] or 0) >= target,
          what=f"{watch} to reach resourceVersion {target}")


def service(name: str, namespace: str = "default", port: int = 80) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": port}]}}


def route(name: str, namespace: str = "default", path: str = "/") -> dict:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                                "backendRefs": [{"name": "web", "port": 80}]}]}}


def gateway(name: str = "gw", namespace: str = "default", secret: str | None = None,
            cls: str = "fluxgate") -> dict:
    listener: dict = {"name": "http", "protocol": "HTTP", "port": 80}
    if secret:
        listener = {"name": "https", "protocol": "HTTPS", "port": 443,
                    "tls": {"certificateRefs": [{"name": secret}]}}
    return {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": name, "namespace": namespace},
            "spec": {"gatewayClassName": cls, "listeners": [listener]}}


def tls_secret(name: str, value: str = "a", namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": _b64(value), "tls.key": _b64(value)}}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
