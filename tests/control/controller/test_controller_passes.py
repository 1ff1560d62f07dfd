"""The controller's status passes when the API answers errors (in-process).

A ``Controller`` runs on this test's event loop against an in-process
tests/kubeapi server; the lease renews normally while every status write is
answered 403 (as with a missing RBAC rule). The pass must be retried with a
growing back-off, never in a tight loop, and settle once writes work again.
Waits poll with deadlines; the only timing asserted is a lower bound (the
back-off), which a slow machine can only make easier to meet.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes.client.rest import ApiException

from control.config import Config
from control.controller import Controller
from tests.e2e.gateway import free_port, objects, route
from tests.e2e.test_kubernetes import GATEWAY_CLASS, write_kubeconfig
from tests.kubeapi import KubeAPIServer

GW = "gateway.networking.k8s.io/v1"
BASE, CAP = 0.1, 0.8


@pytest.fixture
def kube():
    server = KubeAPIServer(bookmark_interval=60).start()
    yield server
    server.stop()


@pytest.fixture
def controller(tmp_path, kube):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.port)
    cfg = Config.load({}, {
        "FLUXGATE_KUBECONFIG": str(kubeconfig), "FLUXGATE_ADMIN_ADDRESS": "127.0.0.1",
        "FLUXGATE_ADMIN_PORT": str(free_port()), "FLUXGATE_LEASE_NAMESPACE": "default",
        "FLUXGATE_POD_NAME": "ctl-a", "FLUXGATE_HOLDOFF_MS": "20",
        "FLUXGATE_RESYNC_SECONDS": "600",  # no scheduled full pass during the test
        "FLUXGATE_LEASE_DURATION": "2", "FLUXGATE_LEASE_RENEW_DEADLINE": "1.5",
        "FLUXGATE_LEASE_RETRY_PERIOD": "0.3"})
    ctl = Controller(cfg)
    ctl.pass_backoff_base, ctl.pass_backoff_cap = BASE, CAP
    return ctl


async def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def route_status(kube, name: str) -> dict:
    return (kube.get(GW, "HTTPRoute", name, "default") or {}).get("status") or {}


def test_controller_retries_failing_status_writes_with_growing_back_off(kube, controller):
    for obj in [GATEWAY_CLASS, *objects(8080, {"a": [18080]},
                                        [route("web", [{"backendRefs": [{"name": "a", "port": 80}]}])])]:
        kube.apply(obj)
    ctl = controller
    passes: list[tuple[float, float, int]] = []  # (start, end, failed) of each pass
    failing = True
    write, put = ctl.writer.write, ctl.writer._put

    def timed_write(report, full=False):
        start = time.monotonic()
        result = write(report, full=full)
        passes.append((start, time.monotonic(), result.failed))
        return result

    def forbidden_put(key, obj):
        if failing:
            raise ApiException(status=403, reason="Forbidden")
        return put(key, obj)

    ctl.writer.write, ctl.writer._put = timed_write, forbidden_put

    async def scenario():
        nonlocal failing
        task = asyncio.create_task(ctl.run())
        try:
            await until(lambda: len(passes) >= 6, 10, "six failing passes")
            assert ctl.elector.is_leader  # the lease renews: only status writes fail
            failing = False
            await until(lambda: route_status(kube, "web").get("parents"), 10, "the route's status")
            await until(lambda: ctl._pass_failures == 0, 5, "the back-off to reset")
        finally:
            ctl._request_stop()
            await asyncio.wait_for(task, 15)

    asyncio.run(scenario())

    failed = [p for p in passes if p[2]]
    assert len(failed) >= 6 and all(p[2] == 3 for p in failed[:6])  # GatewayClass, Gateway, route
    # Each retry waits at least half its back-off: 0.05, 0.1, 0.2, 0.4, 0.4 s (cap 0.8).
    for k in range(1, 6):
        gap = failed[k][0] - failed[k - 1][1]
        assert gap >= min(CAP, BASE * 2 ** (k - 1)) / 2 - 0.01, (k, gap, passes)
    assert passes[-1][2] == 0  # the last pass wrote everything
    assert ctl.status_writes >= 3 and ctl.status_failed >= 18
