"""Fixtures: a fresh server per test (stopped by the finaliser) and real clients on it."""

from __future__ import annotations

import queue
import threading

import pytest
from kubernetes import client, watch

from tests.kubeapi import KubeAPIServer, client_for


@pytest.fixture
def kube():
    server = KubeAPIServer(bookmark_interval=0.2, rv_wait=0.3).start()
    yield server
    server.stop()


@pytest.fixture
def api_client(kube):
    with client_for(kube.url) as api:
        yield api


@pytest.fixture
def core(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture
def custom(api_client):
    return client.CustomObjectsApi(api_client)


@pytest.fixture
def networking(api_client):
    return client.NetworkingV1Api(api_client)


@pytest.fixture
def slices(api_client):
    return client.DiscoveryV1Api(api_client)


@pytest.fixture
def leases(api_client):
    return client.CoordinationV1Api(api_client)


@pytest.fixture
def apiext(api_client):
    return client.ApiextensionsV1Api(api_client)


class EventStream:
    """``watch.Watch().stream(...)`` on a thread; events (or the exception that
    ended it, or END) arrive in a queue so a test can interleave writes."""

    END = "END"

    def __init__(self, func, *args, **kwargs):
        self.watch = watch.Watch()
        self.events: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, func, args, kwargs):
        try:
            for event in self.watch.stream(func, *args, **kwargs):
                self.events.put(event)
        except Exception as e:  # handed to the test, which asserts on it
            self.events.put(e)
        else:
            self.events.put(self.END)

    def next(self, timeout: float = 5.0, skip_bookmarks: bool = True):
        while True:
            item = self.events.get(timeout=timeout)
            if skip_bookmarks and isinstance(item, dict) and item["type"] == "BOOKMARK":
                continue
            return item

    def take(self, count: int, timeout: float = 5.0) -> list:
        return [self.next(timeout) for _ in range(count)]

    def stop(self, kube) -> None:
        self.watch.stop()
        kube.drop_watches()
        self._thread.join(timeout=5)


@pytest.fixture
def streams(kube):
    """Start EventStreams; all are stopped at the end of the test."""
    started: list[EventStream] = []

    def start(func, *args, **kwargs) -> EventStream:
        stream = EventStream(func, *args, **kwargs)
        started.append(stream)
        return stream

    yield start
    for stream in started:
        stream.stop(kube)
