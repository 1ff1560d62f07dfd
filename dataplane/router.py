"""The router of one table generation: host → virtual host → route entry → action.

Theory of operation: control already validated the table and sorted every
virtual host's entries by Gateway API precedence, so a worker never sorts or
validates; it only indexes. A ``Router`` is built once per generation from the
table index; a virtual host or cluster blob is decoded the first time a
request touches it and kept while its digest stays the same, across
generations. Per request the work is a few dict lookups:

* host: exact dict, then wildcard suffixes (most specific first), then the
  listener's default virtual host;
* path: exact-path dict, then prefixes by segment boundary (a dict per
  distinct prefix length), then regexes; each candidate carries its global
  precedence rank and the lowest rank whose method/header/query conditions
  hold wins;
* the winner's ``CompiledAction`` (its filter chains, weights and retry plan
  built when the virtual host was decoded): per request only the chain runs.

Invariant: nothing here keeps a reference into shared memory after the
``Router`` itself is dropped, except the ``BlobRef``s of this generation,
which live exactly as long as the ``Router``.

Integrity: a blob is decoded only if its bytes still have the CRC-32 its
``BlobRef`` carries (the slot's checksum is verified once, when the worker
takes the generation; this catches bytes damaged after that). A damaged
virtual host answers 503 and a damaged cluster has no endpoints (503) for
this generation only; neither is cached, and ``on_damage`` (the worker's:
it tells the control process, which republishes) is called once per blob.
"""

from __future__ import annotations

import bisect
import random
import zlib
from itertools import accumulate

from common.match import HostIndex, PathIndex
from dataplane.filters import chain
from dataplane.upstream.balancer import ClusterState
from shm import codec
from shm.schema import Action, Cluster, RetryPolicy, Table


class RetryPlan:
    """A RetryPolicy made ready for the exchange: statuses as a set, seconds."""

    __slots__ = ("attempts", "codes", "connect_failure", "reset", "backoff")

    def __init__(self, policy: RetryPolicy) -> None:
        self.attempts = policy.attempts
        self.codes = frozenset(policy.codes)
        self.connect_failure = policy.connect_failure
        self.reset = policy.reset
        self.backoff = policy.backoff_ms / 1000.0


class CompiledAction:
    """An Action with its weights, chains and retries made ready; clusters resolved per generation.

    ``chain`` is the rule's filter chain (None: no filters). When a backendRef
    has filters of its own, ``backend_chains[i]`` is the chain of live backend
    ``i`` and ``responses[i]`` its response filters after the rule's;
    otherwise ``backend_chains`` is None and ``responses`` is the rule's
    response filters (one tuple for every backend).
    """

    __slots__ = ("action", "clusters", "cumulative", "total", "timeout", "backend_timeout", "single",
                 "chain", "backend_chains", "responses", "retry")

    def __init__(self, action: Action, clusters: list[ClusterState | None], resolve) -> None:
        self.action = action
        live = [(c, b.weight, b.filters) for c, b in zip(clusters, action.backends) if b.weight > 0]
        self.clusters = [c for c, _, _ in live]
        self.cumulative = list(accumulate(w for _, w, _ in live))
        self.total = self.cumulative[-1] if live else 0
        self.timeout = action.request_timeout_ms / 1000.0
        self.backend_timeout = action.backend_timeout_ms / 1000.0
        # One live backend that resolved: no weighing per request.
        self.single = self.clusters[0] if len(self.clusters) == 1 else None
        self.retry = RetryPlan(action.retry) if action.retry is not None else None
        self.chain = chain.build(action.filters, resolve)
        rule_responses = self.chain.responses if self.chain is not None else ()
        self.backend_chains = None
        self.responses = rule_responses
        if any(fs for _, _, fs in live):
            self.single = None  # the choice must say which backend, for its chain
            self.backend_chains = [chain.build(fs, resolve) for _, _, fs in live]
            self.responses = [rule_responses + (bc.responses if bc is not None else ())
                              for bc in self.backend_chains]

    def choose(self) -> ClusterState | None:
        """A cluster by weight; None means unresolved (the caller answers 500)."""
        i = self.choose_index()
        return self.clusters[i] if i >= 0 else None

    def choose_index(self) -> int:
        """The index of a live backend by weight, or -1 when there is none."""
        if len(self.clusters) == 1:
            return 0
        if not self.total:
            return -1
        return bisect.bisect_right(self.cumulative, random.random() * self.total)


class VirtualHostRouter(PathIndex):
    """A virtual host for a worker: the shared PathIndex with compiled actions."""

    __slots__ = ("gateway",)
    damaged = False  # see DamagedHost

    def __init__(self, vhost, router: "Router") -> None:
        actions = [router.compile_action(a) for a in vhost.actions]
        super().__init__(vhost, lambda e: actions[e.action])
        self.gateway = vhost.gateway  # the label of its requests (the table says whose socket it is)


class DamagedHost:
    """A virtual host whose bytes failed their checksum: every request is 503."""

    __slots__ = ("gateway",)
    damaged = True

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway

    def match(self, method, path, headers, query):
        return None


def _intact(ref) -> bool:
    return zlib.crc32(ref.blob) == ref.digest


class Router:
    """The routing view of one table generation."""

    def __init__(self, table: Table, previous: "Router | None" = None, on_damage=None) -> None:
        self.on_damage = on_damage  # (kind, name): a blob failed its checksum
        self._damaged: set[str] = set()
        self.generation = table.generation
        self.table = table
        self._vhost_refs = table.vhosts
        self._cluster_refs = {r.name: r for r in table.clusters}
        # Decoded objects survive a swap while their bytes are unchanged. A
        # changed cluster is updated in place, so the virtual hosts that hold
        # it stay valid and an endpoint change costs one cluster decode.
        self._cluster_cache: dict[str, tuple[int, ClusterState]] = {}
        if previous is not None:
            for name, (digest, state) in previous._cluster_cache.items():
                ref = self._cluster_refs.get(name)
                if ref is None:
                    continue  # gone: every vhost naming it changed, so is rebuilt
                if ref.digest != digest:
                    if not self._check(ref, "cluster"):
                        state.update(Cluster(name))
                        self._cluster_cache[name] = (-1, state)  # decoded anew next generation
                        continue
                    state.update(codec.decode_cluster(ref.blob))
                self._cluster_cache[name] = (ref.digest, state)
        digests = {r.name: r.digest for r in table.vhosts}
        self._vhost_cache: dict[str, tuple[int, VirtualHostRouter]] = {
            n: v for n, v in (previous._vhost_cache.items() if previous else ())
            if digests.get(n) == v[0]
        }
        self._decoded: list[VirtualHostRouter | None] = [None] * len(table.vhosts)
        self._hosts = {lst.name: HostIndex(lst) for lst in table.listeners}
        self._gateways = {lst.name: lst.gateway for lst in table.listeners}

    def gateway(self, listener: str) -> str:
        """The Gateway label of requests on ``listener`` that no virtual host takes."""
        return self._gateways.get(listener, "")

    def listener_names(self) -> list[str]:
        return list(self._hosts)

    def vhost(self, listener: str, host: bytes) -> VirtualHostRouter | None:
        hosts = self._hosts.get(listener)
        if hosts is None:
            return None
        i = hosts.lookup(host)
        if i < 0:
            return None
        vh = self._decoded[i]
        if vh is None:
            vh = self._decode_vhost(i, listener)
        return vh

    def _check(self, ref, kind: str) -> bool:
        if _intact(ref):
            return True
        if ref.name not in self._damaged:
            self._damaged.add(ref.name)
            if self.on_damage is not None:
                self.on_damage(kind, ref.name)
        return False

    def _decode_vhost(self, i: int, listener: str) -> VirtualHostRouter | DamagedHost:
        ref = self._vhost_refs[i]
        hit = self._vhost_cache.get(ref.name)
        if hit is not None and hit[0] == ref.digest:
            vh = hit[1]
        elif not self._check(ref, "virtual host"):
            vh = DamagedHost(self._gateways.get(listener, ""))
        else:
            vh = VirtualHostRouter(codec.decode_vhost(ref.blob), self)
            self._vhost_cache[ref.name] = (ref.digest, vh)
        self._decoded[i] = vh
        return vh

    def cluster(self, name: str) -> ClusterState | None:
        """The cluster's state, decoded on first use; None if unresolved."""
        hit = self._cluster_cache.get(name)
        if hit is not None:
            return hit[1]
        ref = self._cluster_refs.get(name)
        if ref is None:
            return None
        if not self._check(ref, "cluster"):
            state = ClusterState(Cluster(name))  # no endpoints: 503
            self._cluster_cache[name] = (-1, state)  # decoded anew next generation
            return state
        state = ClusterState(codec.decode_cluster(ref.blob))
        self._cluster_cache[name] = (ref.digest, state)
        return state

    def compile_action(self, action: Action) -> CompiledAction:
        return CompiledAction(action, [self.cluster(b.cluster) for b in action.backends], self.cluster)

    def route(self, listener: str, host: bytes, method: bytes, path: bytes, headers: list, query: bytes):
        """The winning route entry (``.action``, ``.source``) or None (404)."""
        vh = self.vhost(listener, host)
        if vh is None:
            return None
        return vh.match(method, path, headers, query)
