"""Choosing an endpoint: a cluster's endpoints and a round robin over them, per worker.

Rules:
* Workers start at different offsets, so N workers do not all send their
  first requests to endpoint 0.
* ``pick(skip=...)`` avoids the endpoint that just failed when another
  exists (connect failures and retries move on).
* A cluster's state is updated in place when its endpoints change: the
  virtual hosts of every generation that hold it see the new endpoints, and
  an endpoint change costs one cluster decode, not a route rebuild.
"""

from __future__ import annotations

import random

from shm.schema import Cluster


class ClusterState:
    """A cluster's endpoints and its round-robin position (per worker)."""

    __slots__ = ("name", "endpoints", "host_rewrite", "_next")

    def __init__(self, cluster: Cluster) -> None:
        self.name = cluster.name
        self._next = 0
        self.update(cluster)

    def update(self, cluster: Cluster) -> None:
        """New endpoints for the same cluster (in place: vhosts hold this object)."""
        # (address, port): the pool's key, made once here, not per request.
        self.endpoints: tuple[tuple[str, int], ...] = tuple((e.address, e.port) for e in cluster.endpoints)
        self.host_rewrite = cluster.host_rewrite.encode()
        self._next = random.randrange(len(cluster.endpoints)) if cluster.endpoints else 0

    def pick(self, skip: tuple[str, int] | None = None) -> tuple[str, int] | None:
        """Round robin; ``skip`` avoids the endpoint that just failed (if another exists)."""
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps[0]
        if not n:
            return None
        i = self._next % n
        self._next = i + 1
        ep = eps[i]
        if ep == skip and n > 1:
            ep = eps[(i + 1) % n]
            self._next = i + 2
        return ep
