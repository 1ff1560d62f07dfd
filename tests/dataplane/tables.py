"""Build real encoded tables for dataplane unit tests (no control process)."""

from __future__ import annotations

from shm import codec
from shm.codec import TableEncoder
from shm.schema import (
    Action, Cluster, CompiledTable, Endpoint, HostEntry, Listener, Match, PathExact,
    PathPrefix, PathRegex, RouteEntry, VirtualHost, WeightedCluster,
)


def entry(path, action: int, source: str = "r", **match) -> RouteEntry:
    return RouteEntry(Match(path, **match), action, source)


def table(vhosts, clusters, exact=(), wildcards=(), default=0, generation=1, encoder=None):
    enc = encoder or TableEncoder()
    data = enc.encode(CompiledTable(
        listeners=(Listener("l", "127.0.0.1", 1, exact=tuple(exact), wildcards=tuple(wildcards),
                            default_vhost=default),),
        vhosts=tuple(vhosts), clusters=tuple(clusters)), generation)
    return codec.decode_index(data)


def single(cluster: str = "up", endpoints=(("127.0.0.1", 9),), **kw):
    vh = VirtualHost("v", (entry(PathPrefix("/"), 0),), (Action((WeightedCluster(cluster),)),))
    return table([vh], [Cluster(cluster, tuple(Endpoint(a, p) for a, p in endpoints))], **kw)


__all__ = ["Action", "Cluster", "Endpoint", "HostEntry", "PathExact", "PathPrefix", "PathRegex",
           "VirtualHost", "WeightedCluster", "entry", "table", "single"]
