"""A rolling update of a backend, through the Kubernetes API: not one request fails.

The backend's pods are two echo processes, each with its own EndpointSlice
(a slice carries one port). The rollout goes as the EndpointSlice controller
reports it: the new pod becomes ready; the old one turns terminating (ready
false, serving true) and then leaves its slice; only after every worker
serves the table without it does the old process stop. Meanwhile clients
send requests without pause, on kept-alive connections and on new ones.
"""

from __future__ import annotations

import http.client
import threading

from tests.e2e.test_kubernetes import (  # noqa: F401  (kubeapi fixtures)
    api_delete, eventually, kubeapi, kubeapi_factory, start_gateway, web_route, world,
)


def _slice(name: str, port: int, ready: bool = True, terminating: bool = False) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "a"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"],
                       "conditions": {"ready": ready, "serving": True, "terminating": terminating}}],
    }


class Load:
    """Clients sending GET / without pause until stopped; every answer counted."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.answers: dict[str, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
                         for i in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self, keep_alive: bool) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/", headers={"Host": "example.com"})
                resp = conn.getresponse()
                body = resp.read()
                outcome = resp.getheader("x-backend") if resp.status == 200 else f"status {resp.status}: {body!r}"
            except OSError as exc:
                outcome = f"error {type(exc).__name__}: {exc}"
                conn = None
            with self._lock:
                if outcome in ("old", "new"):
                    self.answers[outcome] = self.answers.get(outcome, 0) + 1
                else:
                    self.failures.append(outcome)
            if not keep_alive and conn is not None:
                conn.close()
                conn = None

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def test_kubernetes_rolling_update_of_a_backend_fails_no_request(
        tmp_path, kubeapi, gateway_factory, echo_factory, port):
    old, new = echo_factory("old"), echo_factory("new")
    gw = start_gateway(gateway_factory, tmp_path, kubeapi.port)
    for obj in world(port, {"a": [old.port]}, [web_route()]):
        kubeapi.apply(obj)
    eventually(lambda: _backend(port) == "old", what="the old pod to serve")
    load = Load(port)
    try:
        kubeapi.apply(_slice("a-new", new.port))  # the new pod is ready
        eventually(lambda: load.answers.get("new", 0) > 20, what="the new pod to take traffic")
        kubeapi.apply(_slice("a-1", old.port, ready=False, terminating=True))  # the old one terminates
        assert api_delete(kubeapi, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/a-1") == 200
        eventually(lambda: _only_new_everywhere(gw, new.port), what="every worker to drop the old pod")
        seen_old = load.answers.get("old", 0)
        old.stop()  # the old pod exits only once no worker sends to it
        eventually(lambda: load.answers.get("new", 0) > seen_old + 200, what="more traffic after the rollout")
    finally:
        load.stop()
    assert load.failures == []
    assert load.answers["old"] > 0 and load.answers["new"] > 200


def _backend(port: int) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "example.com"})
        resp = conn.getresponse()
        resp.read()
        return resp.getheader("x-backend")
    except OSError:
        return None
    finally:
        conn.close()


def _only_new_everywhere(gw, new_port: int) -> bool:
    cfg = gw.debug_config()
    clusters = [c for c in cfg["table"]["clusters"] if c["name"] == "default/a:80"]
    if not clusters or [e["port"] for e in clusters[0]["endpoints"]] != [new_port]:
        return False
    return all(w["generation"] == cfg["generation"] for w in cfg["workers"])
