"""The status writer: the one place where status reaches the Kubernetes API.

translate() records status in a StatusReport; only the controller's leader
turns a report into API writes, through this module (file mode logs it
instead). Learnt from Envoy Gateway's status updater and kgateway's reporter.

Rules:

* Kinds: GatewayClass, Gateway, HTTPRoute and FluxGateRoute get their
  ``status`` subresource written; an Ingress gets ``status.loadBalancer`` when
  the writer is given the address it is served at (it has no conditions in
  the API). Other kinds in a report (IngressClass) have no status: skipped.
* Merge, never overwrite blindly (``merged_status``, a pure function):
  - conditions merge by type as ``meta.SetStatusCondition`` does: a type the
    report names replaces the old one but keeps its ``lastTransitionTime``
    while its status is unchanged; ``observedGeneration`` is the object's
    ``metadata.generation`` as translated;
  - on an object, condition types FluxGate sets (``OWNED_TYPES``) that the
    report no longer names are removed (a stale ``Conflicted`` must not
    outlive the conflict); other types (another controller's, a policy's) are
    kept as they are;
  - a Gateway's ``listeners`` and ``addresses`` are FluxGate's entirely;
  - a route's ``status.parents``: entries whose ``controllerName`` is ours are
    replaced by the report's (matched by parentRef, with the API's defaults
    applied, for the timestamps); entries of other controllers are kept
    untouched, in place; ours come after them.
* No-op writes are skipped: the merged status is compared with the current
  one, and nothing is written when they are equal.
* Optimistic concurrency: every write is a PUT of the object as just read,
  carrying its ``resourceVersion``. A 409 means someone wrote in between:
  re-read, re-merge, retry (at most ``conflict_retries`` times). A 404 means
  the object is gone: nothing to do.
* At most one write per object per change: the writer remembers, per object,
  the report entry it last settled (written or found equal). A pass touches
  only objects whose entry changed, with one read and at most one successful
  write each; ``full=True`` (a resync, a new leader) re-reads everything and
  still writes only what differs, so a new leader does not rewrite the world.
* A route that drops out of the report after the writer settled it (its
  parent is no longer ours) gets its parent entries of ours removed, once.

Theory of operation: ``write(report)`` plans the work (changed entries, routes
to clean up), then runs one job per object on a bounded thread pool
(``workers``; 1 runs them in the calling thread); every API call has
``request_timeout``. The pass returns counts (``PassResult``). It blocks: call
it from a worker thread (``asyncio.to_thread``), one pass at a time, after the
translation hold-off, so a burst of changes is one pass. ``allowed`` (e.g.
``elector.is_leader``) is checked before every write, so a writer that lost
leadership mid-pass stops writing.

Deployment needs: RBAC ``get`` and ``update`` on the ``status`` subresource
of gatewayclasses, gateways, httproutes (gateway.networking.k8s.io),
fluxgateroutes (fluxgate.io) and ingresses (networking.k8s.io), plus ``get``
on the objects themselves. The Gateway API CRDs must serve v1 (the version
this writer reads and writes).
"""

from __future__ import annotations

import datetime
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import msgspec
import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from control.status import (
    ACCEPTED,
    CONFLICTED,
    PARTIALLY_INVALID,
    PROGRAMMED,
    RESOLVED_REFS,
    Condition,
    ObjectStatus,
    ParentStatus,
    StatusReport,
)
from control.translate import CONTROLLER_NAME
from control.objects import kinds

log = logging.getLogger("fluxgate.status")

# kind → (group, version, plural, namespaced): the kinds whose status FluxGate writes.
KINDS: dict[str, tuple[str, str, str, bool]] = {
    k.kind: (k.group, k.version, k.plural, k.namespaced) for k in kinds.STATUS_KINDS
}
ROUTE_KINDS = frozenset({"HTTPRoute", "FluxGateRoute"})
# Condition types only the object's own controller sets: FluxGate's to remove
# when it no longer reports them. ("Ready" is Gateway API's reserved type.)
OWNED_TYPES = frozenset({ACCEPTED, PROGRAMMED, RESOLVED_REFS, CONFLICTED, PARTIALLY_INVALID,
                         "TLSProgrammed", "Ready"})
MAX_MESSAGE = 32768  # metav1.Condition's maxLength
CONFLICT_RETRIES = 5
WORKERS = 8
REQUEST_TIMEOUT = 10.0


def now_rfc3339() -> str:
    """``metav1.Time`` as the API writes it: seconds, UTC, ``Z``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the pure part: merging --------------------------------------------------------------


def merge_conditions(
    current: Iterable[dict] | None, desired: Iterable[Condition], generation: int, now: str,
    owned: frozenset[str] | None = OWNED_TYPES,
) -> list[dict]:
    """``desired`` as API conditions, merged by type with ``current``.

    A condition whose status did not change keeps its ``lastTransitionTime``.
    Current conditions of a type ``desired`` lacks are kept unless their type is
    in ``owned`` (None: every type is owned, nothing foreign is kept).
    """
    before = {c.get("type"): c for c in current or () if isinstance(c, dict)}
    out: list[dict] = []
    named: set[str] = set()
    for cond in desired:
        named.add(cond.type)
        old = before.get(cond.type)
        changed = old is None or old.get("status") != cond.status or not old.get("lastTransitionTime")
        out.append({
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message[:MAX_MESSAGE],
            "lastTransitionTime": now if changed else old["lastTransitionTime"],
            "observedGeneration": generation,
        })
    if owned is not None:
        out += [c for t, c in before.items() if t not in named and t not in owned]
    return out


def parent_key(ref: dict, route_namespace: str) -> tuple:
    """A parentRef (as written in status) with the API's defaults applied."""
    group = ref.get("group")
    return (kinds.GATEWAY_GROUP if group is None else group, ref.get("kind") or "Gateway", ref.get("namespace") or route_namespace,
            ref.get("name"), ref.get("sectionName"), ref.get("port"))


def merge_parents(
    current: Iterable[dict] | None, desired: Iterable[ParentStatus], route_namespace: str,
    controller_name: str, generation: int, now: str,
) -> list[dict]:
    """A route's ``status.parents``: others' entries untouched, ours from ``desired``."""
    current = [p for p in current or () if isinstance(p, dict)]
    ours = {parent_key(p.get("parentRef") or {}, route_namespace): p
            for p in current if p.get("controllerName") == controller_name}
    out = [p for p in current if p.get("controllerName") != controller_name]
    for parent in desired:
        ref = msgspec.to_builtins(parent.parent_ref)
        old = ours.get(parent_key(ref, route_namespace)) or {}
        out.append({
            "parentRef": ref,
            "controllerName": parent.controller_name,
            "conditions": merge_conditions(old.get("conditions"), parent.conditions,
                                           generation, now, owned=None),
        })
    return out


def merged_status(
    obj: dict, desired: ObjectStatus | None, *, controller_name: str = CONTROLLER_NAME,
    now: str, load_balancer: list[dict] | None = None,
) -> dict:
    """The status ``obj`` (as read from the API) should have.

    ``desired`` None: the route is no longer in the report; only our parents go.
    ``load_balancer``: the ``status.loadBalancer.ingress`` of an accepted Ingress.
    Pure: returns a new dict and leaves ``obj`` as it was.
    """
    kind = obj.get("kind", desired.kind if desired else "")
    meta = obj.get("metadata") or {}
    current = obj.get("status") or {}
    status = dict(current)
    generation = desired.observed_generation if desired else 0
    if kind in ROUTE_KINDS:
        parents = merge_parents(current.get("parents"), desired.parents if desired else (),
                                meta.get("namespace", ""), controller_name, generation, now)
        status["parents"] = parents
    elif kind == "Ingress":
        if desired is not None and desired.is_true(ACCEPTED) and load_balancer:
            status["loadBalancer"] = {"ingress": [dict(x) for x in load_balancer]}
        else:
            status["loadBalancer"] = {}
    elif desired is not None:  # GatewayClass, Gateway
        status["conditions"] = merge_conditions(current.get("conditions"), desired.conditions,
                                                generation, now)
        if kind == "Gateway":
            _gateway_parts(status, current, desired, generation, now)
    return status


def _gateway_parts(status: dict, current: dict, desired: ObjectStatus, generation: int,
                   now: str) -> None:
    before = {x.get("name"): x for x in current.get("listeners") or () if isinstance(x, dict)}
    status["listeners"] = [{
        "name": lst.name,
        "supportedKinds": [{"group": k.group, "kind": k.kind} for k in lst.supported_kinds],
        "attachedRoutes": lst.attached_routes,
        "conditions": merge_conditions((before.get(lst.name) or {}).get("conditions"),
                                       lst.conditions, generation, now, owned=None),
    } for lst in desired.listeners]
    if desired.addresses:
        status["addresses"] = [{"type": a.type, "value": a.value} for a in desired.addresses]
    else:
        status.pop("addresses", None)


# --- the I/O part: one pass ----------------------------------------------------------------

Key = tuple[str, str, str]


@dataclass
class PassResult:
    """What one ``write`` did. ``writes`` counts successful PUTs (409s excluded)."""

    planned: int = 0  # objects looked at (read)
    writes: int = 0
    unchanged: int = 0  # read, merged, found equal: nothing written
    conflicts: int = 0  # 409s met (each followed by a re-read)
    gone: int = 0  # 404: the object no longer exists
    failed: int = 0  # other errors, or conflicts past the retries (tried again next pass)
    skipped: int = 0  # report entries unchanged since the last pass: not even read
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)


class StatusWriter:
    """Writes reports to the API; remembers what it settled, so passes are incremental."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        controller_name: str = CONTROLLER_NAME,
        ingress_load_balancer: list[dict] | None = None,
        workers: int = WORKERS,
        request_timeout: float = REQUEST_TIMEOUT,
        conflict_retries: int = CONFLICT_RETRIES,
        allowed: Optional[Callable[[], bool]] = None,
        clock: Callable[[], str] = now_rfc3339,
    ) -> None:
        """``ingress_load_balancer``: e.g. ``[{"ip": "203.0.113.7"}]``, the address
        Ingresses are served at (None: Ingress status is left alone).
        ``allowed``: checked before each write (``elector.is_leader``)."""
        self.api = client.CustomObjectsApi(api_client)
        self.controller_name = controller_name
        self.ingress_load_balancer = ingress_load_balancer
        self.workers = max(1, workers)
        self.request_timeout = request_timeout
        self.conflict_retries = conflict_retries
        self.allowed = allowed
        self.clock = clock
        self._settled: dict[Key, bytes] = {}  # key → fingerprint of the settled report entry

    def forget(self) -> None:
        """Drop what was settled: the next pass re-reads every object (a new term)."""
        self._settled.clear()

    def write(self, report: StatusReport, *, full: bool = False) -> PassResult:
        """One pass: write what changed since the last pass (everything if ``full``)."""
        started = time.perf_counter()
        result = PassResult()
        now = self.clock()
        jobs: list[tuple[Key, ObjectStatus | None, bytes]] = []
        present: set[Key] = set()
        for status in report:
            if status.kind not in KINDS:
                continue
            if status.kind == "Ingress" and self.ingress_load_balancer is None:
                continue
            key = (status.kind, status.namespace, status.name)
            present.add(key)
            mark = msgspec.json.encode(status)
            if not full and self._settled.get(key) == mark:
                result.skipped += 1
                continue
            jobs.append((key, status, mark))
        for key in [k for k in self._settled if k not in present]:
            if key[0] in ROUTE_KINDS:
                jobs.append((key, None, b""))  # no longer ours: take our parents off
            else:
                del self._settled[key]
        result.planned = len(jobs)
        if self.workers == 1 or len(jobs) <= 1:
            outcomes = [self._settle(job, now) for job in jobs]
        else:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="status") as pool:
                outcomes = list(pool.map(lambda job: self._settle(job, now), jobs))
        for (key, desired, mark), (outcome, conflicts, error) in zip(jobs, outcomes):
            result.conflicts += conflicts
            if outcome in ("writes", "unchanged", "gone"):
                if desired is None or outcome == "gone":
                    self._settled.pop(key, None)
                else:
                    self._settled[key] = mark
            setattr(result, outcome, getattr(result, outcome) + 1)
            if error:
                result.errors.append(error)
        result.elapsed = time.perf_counter() - started
        if result.writes or result.failed:
            log.info("status pass", extra={"fields": {
                "writes": result.writes, "unchanged": result.unchanged,
                "conflicts": result.conflicts, "failed": result.failed,
                "elapsed_ms": round(result.elapsed * 1000)}})
        return result

    def _settle(self, job: tuple[Key, ObjectStatus | None, bytes], now: str
                ) -> tuple[str, int, str]:
        """Read, merge, write one object: (outcome, conflicts met, error text)."""
        key, desired, _ = job
        label = f"{key[0]} {key[1] + '/' if key[1] else ''}{key[2]}"
        conflicts = 0
        try:
            for _ in range(self.conflict_retries + 1):
                obj = self._get(key)
                if obj is None:
                    return "gone", conflicts, ""
                status = merged_status(obj, desired, controller_name=self.controller_name,
                                       now=now, load_balancer=self.ingress_load_balancer)
                if status == (obj.get("status") or {}):
                    return "unchanged", conflicts, ""
                if self.allowed is not None and not self.allowed():
                    return "failed", conflicts, f"{label}: not written: no longer the leader"
                obj["status"] = status
                try:
                    self._put(key, obj)
                except ApiException as exc:
                    if exc.status == 409:
                        conflicts += 1
                        continue
                    if exc.status == 404:
                        return "gone", conflicts, ""
                    raise
                return "writes", conflicts, ""
            error = f"{label}: still conflicting after {self.conflict_retries} retries"
        except ApiException as exc:
            error = f"{label}: {exc.status} {exc.reason}"
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            error = f"{label}: {exc}"
        log.warning("status not written", extra={"fields": {"object": label, "error": error}})
        return "failed", conflicts, error

    def _get(self, key: Key) -> dict | None:
        kind, namespace, name = key
        group, version, plural, namespaced = KINDS[kind]
        try:
            if namespaced:
                return self.api.get_namespaced_custom_object(
                    group, version, namespace, plural, name, _request_timeout=self.request_timeout)
            return self.api.get_cluster_custom_object(
                group, version, plural, name, _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _put(self, key: Key, obj: dict) -> Any:
        kind, namespace, name = key
        group, version, plural, namespaced = KINDS[kind]
        if namespaced:
            return self.api.replace_namespaced_custom_object_status(
                group, version, namespace, plural, name, obj, _request_timeout=self.request_timeout)
        return self.api.replace_cluster_custom_object_status(
            group, version, plural, name, obj, _request_timeout=self.request_timeout)
