"""The reflector: one watch's list + watch loop, in its own thread, forever.

A ``Reflector`` mirrors the objects one ``WatchSpec`` (plan.py) selects into
its store bucket (store.py). Rules (what must stay true):

* Read only: it lists and watches, never writes (RBAC: ``list`` and
  ``watch`` on the plan's kinds, nothing else).
* It keeps the resourceVersion of its kind: the list's, then every event's
  and BOOKMARK's (``allowWatchBookmarks``), and watches from there, so
  nothing is missed or seen twice. It lists again:
  - on 410 Gone (an ``ApiException`` 410, or an ERROR event with code 410):
    its history is gone, only a fresh list is right; at once, no back-off;
  - on any other ERROR event, and on an error answer to a watch request
    (after a back-off); a lost connection only resumes the watch;
  - with back-off while the kind is not served at all (a 404 on its list:
    the CRD of a FluxGate or Gateway API kind is not installed).
    Meanwhile the kind counts as listed and empty, so a cluster without,
    say, the FluxGateRoute CRD still gets a gateway for everything else, and
    installing the CRD later is picked up; /debug/config says "not installed".
  - every ``relist_seconds`` (FLUXGATE_RELIST_SECONDS, default 600; 0:
    never), to repair what the watch contract cannot: a store restored
    from a backup, whose resourceVersions went back in time, so that a
    watch resumed from ours misses what it recreated.
* Every ``resync_seconds`` (jittered by up to 10 %) the watch asks the
  server to end the stream (``timeoutSeconds``) and starts a new one from
  its resourceVersion, as client-go's informers do: a connection that died
  silently is noticed, and the API server serves no list. (A re-list at
  that pace would cost every shard a list of every route it watches: at
  5000 routes about 0.1 s of this process's CPU and the API server's work
  every 15 s, times 50 shards - and a change arriving meanwhile waits for
  it.) A re-list changes only what differs (by resourceVersion, store.py),
  so one that finds nothing new causes no rebuild.
* Errors never end the thread: it backs off exponentially with jitter
  (control/retry.py: ``BACKOFF_BASE`` doubling up to ``BACKOFF_CAP``) and
  logs once per streak of failures (a warning), then once when it recovers.
  A watch that was streaming and is cut resumes from its resourceVersion
  after a short pause (a debug line; only a second failure in a row warns).
* ``notify`` (the source's on_change) is called after every change that
  mattered, from this thread.

Theory of operation: ``run`` loops ``list → watch → (watch ...) → re-list``
until the source's ``stopping`` event is set; ``close`` on the source cuts
the open stream (``cut``) so a blocked read returns. Lists are paginated
(``limit``) and read with ``_preload_content=False`` and msgspec: the
client's typed models are never built.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from typing import Any, Callable, Iterable

import msgspec
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from control.objects import kinds
from control.retry import Backoff, jittered
from control.sources.kubernetes.fields import dig
from control.sources.kubernetes.plan import Settings, WatchSpec
from control.sources.kubernetes.store import Bucket, Key, Store

log = logging.getLogger("fluxgate.kubernetes")

LIST_LIMIT = 500
CONNECT_TIMEOUT = 5.0
LIST_READ_TIMEOUT = 60.0
WATCH_READ_GRACE = 15.0  # a watch silent this long past its timeoutSeconds is dead
BACKOFF_BASE = 0.2
BACKOFF_CAP = 30.0
PERIOD_JITTER = 0.1  # resync and re-list periods run up to 10 % late

NOT_INSTALLED = "not installed"

_CUSTOM_GROUPS = kinds.OWN_GROUPS  # served by CRDs: the custom-objects API, maybe not installed

# Built-in kinds: (API class, method for all namespaces / cluster, method per namespace).
_BUILTIN_CALLS = {
    "Service": (client.CoreV1Api, "list_service_for_all_namespaces", "list_namespaced_service"),
    "Secret": (client.CoreV1Api, "list_secret_for_all_namespaces", "list_namespaced_secret"),
    "Namespace": (client.CoreV1Api, "list_namespace", None),
    "EndpointSlice": (client.DiscoveryV1Api, "list_endpoint_slice_for_all_namespaces",
                      "list_namespaced_endpoint_slice"),
    "Ingress": (client.NetworkingV1Api, "list_ingress_for_all_namespaces", "list_namespaced_ingress"),
    "IngressClass": (client.NetworkingV1Api, "list_ingress_class", None),
}


class NotInstalled(Exception):
    """The API does not serve the kind (404 on its list): its CRD is not installed."""


class Gone(Exception):
    """410: the resourceVersion is older than the server's history; re-list."""


class Interrupted(Exception):
    """A watch stream that was open broke (a cut connection, a read timeout)."""


class WatchError(Exception):
    """An ERROR event other than 410."""


class Reflector:
    """One WatchSpec's list + watch loop and state (touched by its thread only;
    the objects live in the store, under its lock)."""

    def __init__(self, spec: WatchSpec, store: Store, api_client: client.ApiClient, *,
                 settings: Settings, list_limit: int, backoff: Backoff,
                 stopping: threading.Event, notify: Callable[[], None],
                 listed: Callable[[], bool]) -> None:
        """``notify``: called after a change that mattered. ``listed``: called
        after every successful list; True when that list completed the source's
        initial lists (then a change is notified even if nothing differed)."""
        self.spec = spec
        self.store = store
        self.bucket: Bucket = store.bucket(spec.kind, spec.keep)
        self.api_client = api_client
        self.settings = settings
        self.list_limit = list_limit
        self.backoff = backoff  # the current streak of failures
        self._stopping = stopping
        self._notify = notify
        self._listed_hook = listed
        self.rv: str | None = None  # None: list first
        self.synced = False  # the first list succeeded
        self.resync_at = 0.0  # when the current watch is asked to end (then renewed)
        self.relist_at = math.inf  # when to list again though the watch works
        self.lists = 0
        self.watches = 0
        self.gone = 0  # 410s seen
        self.error = ""  # the last failure, "" once it works
        self.warned = False  # the streak has been logged
        self.response = None  # the open watch response, so close() can cut it

    @property
    def host(self) -> str:
        return self.api_client.configuration.host

    def describe(self) -> dict:
        return {"watch": str(self.spec), "keep": self.spec.keep_doc, "synced": self.synced,
                "resourceVersion": self.rv, "objects": len(self.bucket.objects), "lists": self.lists,
                "watches": self.watches, "gone": self.gone, "error": self.error}

    def cut(self) -> None:
        """Unblock this thread's read of an open stream (from another thread)."""
        _cut(self.response)

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.rv is None or time.monotonic() >= self.relist_at:
                    self._list()
                if time.monotonic() >= self.resync_at:
                    self.resync_at = self._next_resync()
                self._watch()
            except NotInstalled as exc:
                # Like an empty list, so the gateway serves everything else; asked
                # again every resync period, so installing the CRD later is seen.
                if not self.error.startswith(NOT_INSTALLED):
                    log.warning("Kubernetes kind not served by the API (its CRD is not installed?):"
                                " treated as empty, checked again with back-off", extra={"fields": {
                                    "watch": str(self.spec), "api": self.host, "error": str(exc)}})
                self.error = f"{NOT_INSTALLED} ({exc})"
                self.backoff.fail()  # soon at first (a CRD being installed), then every BACKOFF_CAP
                self._stopping.wait(self.backoff.delay())
            except Gone as exc:
                self.gone += 1
                self.rv = None
                log.info("watch history expired (410 Gone); re-listing", extra={"fields": {
                    "watch": str(self.spec), "error": str(exc)}})
            except Interrupted as exc:
                # Normal life (an API server restart, a load balancer): resume from
                # self.rv after a short pause that grows only if it keeps happening
                # without any event in between.
                if self._stopping.is_set():
                    return
                self._failed(exc.__cause__ or exc, interrupted=True)
                self._stopping.wait(self.backoff.delay())
            except Exception as exc:  # never end the thread: back off and retry
                if self._stopping.is_set():
                    return
                self._failed(exc)
                self._stopping.wait(self.backoff.delay())

    def _list(self) -> None:
        items: dict[Key, dict] = {}
        token = None
        while True:
            params: dict[str, Any] = {"limit": self.list_limit}
            if token:
                params["_continue"] = token
            try:
                resp = self._call(_request_timeout=(CONNECT_TIMEOUT, LIST_READ_TIMEOUT), **params)
            except ApiException as exc:
                if exc.status == 410:  # the continue token expired: start over
                    raise Gone(f"list: {exc.reason}") from None
                if exc.status == 404 and self.spec.kind.group in _CUSTOM_GROUPS:
                    self._listed({}, None)  # its CRD is not installed: no objects
                    raise NotInstalled(describe_error(exc)) from None
                raise
            try:
                data = msgspec.json.decode(resp.data)
            finally:
                resp.release_conn()
            for raw in data.get("items") or ():
                raw = Store.clean(self.spec.kind, raw)
                meta = raw["metadata"]
                items[(meta.get("namespace") or "", meta["name"])] = raw
            meta = data.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                rv = meta.get("resourceVersion")
                break
        self._listed(items, rv)

    def _listed(self, items: dict[Key, dict], rv: str | None) -> None:
        """A list's result (or, for a kind not installed, no objects) is the truth."""
        changed = self.store.replace(self.bucket, items)
        self.rv = rv or None
        self.lists += 1
        self.resync_at = self._next_resync()
        relist = self.settings.relist_seconds
        self.relist_at = _due(relist) if relist else math.inf
        if rv is not None and self.error.startswith(NOT_INSTALLED):
            log.info("Kubernetes kind served by the API now", extra={"fields": {"watch": str(self.spec)}})
        if rv is not None or not self.error.startswith(NOT_INSTALLED):
            self._recovered()
        self.synced = True
        if self._listed_hook():
            changed = True
        if changed:
            self._notify()

    def _next_resync(self) -> float:
        return _due(self.settings.resync_seconds)

    def _watch(self) -> None:
        timeout = max(1, int(min(self.resync_at, self.relist_at) - time.monotonic()))
        try:
            resp = self._call(watch=True, resource_version=self.rv, allow_watch_bookmarks=True,
                              timeout_seconds=timeout,
                              _request_timeout=(CONNECT_TIMEOUT, timeout + WATCH_READ_GRACE))
        except ApiException as exc:
            if exc.status == 410:  # some servers answer a too-old watch with a 410 response
                raise Gone(f"watch: {exc.reason}") from None
            # An answer, not a lost connection: the version itself may be the problem
            # (504 "too large resource version" after a restore): list again.
            self.rv = None
            raise
        self.response = resp
        self.watches += 1
        try:
            if self._stopping.is_set():
                return
            for line in _lines(resp):
                if not line:
                    continue
                event = msgspec.json.decode(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message", "Expired"))
                    self.rv = None  # re-list after the back-off
                    raise WatchError(f"ERROR event {obj.get('code')} {obj.get('reason')}: "
                                     f"{obj.get('message')}")
                self._recovered()
                rv = dig(obj, "metadata", "resourceVersion")
                if kind == "BOOKMARK":
                    self.rv = rv or self.rv
                    continue
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    if self.store.event(self.bucket, kind, obj):
                        self._notify()
                if rv:
                    self.rv = rv
        finally:
            self.response = None
            resp.release_conn()

    def _call(self, **params: Any):
        """The client's list call for the spec (a urllib3 response: content not preloaded)."""
        spec = self.spec
        kind = spec.kind
        if spec.field_selector:
            params["field_selector"] = spec.field_selector
        params = {k: v for k, v in params.items() if v is not None}
        params["_preload_content"] = False
        if kind.group in _CUSTOM_GROUPS:
            api = client.CustomObjectsApi(self.api_client)
            if spec.namespace is None:
                return api.list_cluster_custom_object(kind.group, kind.version, kind.plural, **params)
            return api.list_namespaced_custom_object(kind.group, kind.version, spec.namespace,
                                                     kind.plural, **params)
        api_class, all_method, namespaced_method = _BUILTIN_CALLS[kind.kind]
        api = api_class(self.api_client)
        if spec.namespace is None:
            return getattr(api, all_method)(**params)
        return getattr(api, namespaced_method)(spec.namespace, **params)

    # --- errors -----------------------------------------------------------------------

    def _failed(self, exc: BaseException, interrupted: bool = False) -> None:
        """Count a failure; warn once per streak (a lone interruption is only debug)."""
        failures = self.backoff.fail()
        self.error = describe_error(exc)
        if interrupted and failures == 1:
            log.debug("Kubernetes watch interrupted; resuming", extra={"fields": {
                "watch": str(self.spec), "resourceVersion": self.rv, "error": self.error}})
        elif not self.warned:
            self.warned = True
            log.warning("Kubernetes watch failed; retrying with back-off", extra={"fields": {
                "watch": str(self.spec), "api": self.host, "error": self.error}})
        else:
            log.debug("Kubernetes watch failed again", extra={"fields": {
                "watch": str(self.spec), "failures": failures, "error": self.error}})

    def _recovered(self) -> None:
        failures = self.backoff.reset()
        if self.warned:
            log.info("Kubernetes watch works again", extra={"fields": {
                "watch": str(self.spec), "failures": failures}})
        self.warned = False
        self.error = ""


def _due(period: float) -> float:
    """When a periodic action is next due: ``period`` from now, up to 10 % later,
    so the watches of one process (and of many pods) do not act in step."""
    return time.monotonic() + jittered(period, PERIOD_JITTER)


def _lines(resp) -> Iterable[str]:
    """The stream's lines; a broken stream raises ``Interrupted``."""
    try:
        yield from iter_resp_lines(resp)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Interrupted(str(exc)) from exc


def _cut(resp) -> None:
    """Unblock a thread reading ``resp`` (as kubernetes.watch.Watch.stop does)."""
    if resp is None:
        return
    try:
        resp.shutdown()  # urllib3 >= 2.3
        return
    except Exception:
        pass
    try:
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        pass


def describe_error(exc: BaseException) -> str:
    """A short error for a log line or /readyz: the status of an answer, or why
    there was none (the elector says it the same way)."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}".strip()
    text = str(exc) or type(exc).__name__
    # urllib3 wraps the cause: "... (Caused by NewConnectionError(...: [Errno 111] Connection refused))"
    if "Connection refused" in text:
        return "connection refused"
    return f"{type(exc).__name__}: {text}"[:300]
