"""Choosing an endpoint: round robin per worker, skipping the one that failed."""

from __future__ import annotations

from dataplane.upstream.balancer import ClusterState
from shm.schema import Cluster, Endpoint


def test_balancer_round_robin_skips_the_endpoint_that_failed():
    c = ClusterState(Cluster("c", (Endpoint("a", 1), Endpoint("b", 1))))
    first = c.pick()
    assert c.pick(skip=first) != first
    assert ClusterState(Cluster("e", ())).pick() is None
