"""Endpoint discovery: which EndpointSlice endpoints a cluster gets (issue 5, item 2)."""

from __future__ import annotations

import pytest

from control.translate import translate
from control.translate.backends import DRAINING, READY, UNUSABLE, endpoint_state
from control.objects.resources import EndpointConditions

SETUP = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: fluxgate
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
"""


def _slice(name: str, endpoints: list[tuple[str, dict]]) -> str:
    eps = ", ".join(f"{{addresses: [{addr}], conditions: {cond!s}}}".replace("'", "")
                    for addr, cond in endpoints)
    return f"""
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{eps}]
"""


def _addresses(parse, *slices: str) -> list[str]:
    result = translate(parse(SETUP + "".join(slices)))
    (cluster,) = result.ir.clusters
    return [ep.address for ep in cluster.endpoints]


@pytest.mark.parametrize("conditions, state", [
    ({}, READY),  # unset means ready
    ({"ready": True}, READY),
    ({"ready": True, "serving": True, "terminating": False}, READY),
    ({"ready": False, "serving": True, "terminating": True}, DRAINING),
    ({"ready": False, "terminating": True}, DRAINING),  # serving unset means serving
    ({"ready": False, "serving": False, "terminating": True}, UNUSABLE),
    ({"ready": False, "serving": True, "terminating": False}, UNUSABLE),  # not ready, not leaving
    ({"ready": False}, UNUSABLE),
])
def test_endpoint_state_reads_the_conditions_as_the_api_defines_them(conditions, state):
    assert endpoint_state(EndpointConditions(**conditions)) == state


def test_endpoints_draining_ones_are_never_added_next_to_ready_ones(parse):
    got = _addresses(parse, _slice("web-1", [
        ("10.0.0.1", {"ready": True}),
        ("10.0.0.2", {"ready": False, "serving": True, "terminating": True}),
    ]))
    assert got == ["10.0.0.1"]


def test_endpoints_draining_ones_serve_when_nothing_is_ready(parse):
    got = _addresses(parse, _slice("web-1", [
        ("10.0.0.2", {"ready": False, "serving": True, "terminating": True}),
        ("10.0.0.3", {"ready": False, "serving": False, "terminating": True}),
        ("10.0.0.4", {"ready": False}),
    ]))
    assert got == ["10.0.0.2"]


def test_endpoints_a_ready_endpoint_in_another_slice_wins_over_draining(parse):
    """The fallback is per Service port across all its slices, not per slice."""
    got = _addresses(parse,
                     _slice("web-1", [("10.0.0.2", {"ready": False, "serving": True, "terminating": True})]),
                     _slice("web-2", [("10.0.0.5", {"ready": True})]))
    assert got == ["10.0.0.5"]


def test_endpoints_nothing_usable_is_an_empty_cluster(parse):
    got = _addresses(parse, _slice("web-1", [
        ("10.0.0.3", {"ready": False, "serving": False, "terminating": True}),
    ]))
    assert got == []
