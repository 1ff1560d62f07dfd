"""The Kubernetes source: list + watch of every kind FluxGate reads.

It offers the Runner what ``FileSource`` offers (``fingerprint()`` and
``load()``), so the rest of the pipeline cannot tell the two apart: the
objects go through the same ``ObjectCache``, which decides whether a change
matters to translation (a status-only change of a route does not).

Rules (what must stay true):

* Read only. A data-plane pod lists and watches; it never writes (RBAC:
  ``list`` and ``watch`` on the kinds below, nothing else).
* Never a half-listed world. ``synced`` is False until every watch's first
  list has succeeded; the Runner publishes no table before. After that a
  broken watch keeps its last objects (the live table keeps serving) while
  it retries.
* One thread per watch (see ``plan``). Each keeps the resourceVersion of its
  kind: the list's, then every event's and BOOKMARK's
  (``allowWatchBookmarks``), and watches from there, so nothing is missed or
  seen twice. A watch is re-listed:
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
  Every ``resync_seconds`` (jittered by up to 10 %) the watch asks the
  server to end the stream (``timeoutSeconds``) and starts a new one from
  its resourceVersion, as client-go's informers do: a connection that died
  silently is noticed, and the API server serves no list. (A re-list at
  that pace would cost every shard a list of every route it watches: at
  5000 routes about 0.1 s of this process's CPU and the API server's work
  every 15 s, times 50 shards - and a change arriving meanwhile waits for
  it.) A re-list changes only what differs (by resourceVersion), so one
  that finds nothing new causes no rebuild.
* Errors never end a watch thread: it backs off exponentially with jitter
  (``BACKOFF_BASE`` doubling up to ``BACKOFF_CAP``) and logs once per streak
  of failures (a warning), then once when it recovers. A watch that was
  streaming and is cut resumes from its resourceVersion after a short pause
  (a debug line; only a second failure in a row warns).
* ``fingerprint()`` changes exactly when an event or re-list changed an
  object that can matter. A Secret matters only while a Gateway listener's
  ``tls.certificateRefs`` or an Ingress's ``spec.tls[].secretName`` (seen by
  this source) names it; any other Secret event is taken in silently.
  Secrets reach ``load()`` only when they are referenced *and* the typed
  cache reads Secrets (``validation.KINDS``; TLS termination is not there
  yet), so an unsupported kind is never handed to the cache.
* ``load()`` is a snapshot under the lock: each object is a ``KObject`` with
  ``file`` "kubernetes", so problems read "kubernetes HTTPRoute ns/name:
  rejected: ...". ``metadata.managedFields`` is dropped on arrival.
* ``on_change`` (given to ``start``) is called from a watch thread after
  every fingerprint change and once when the initial lists are complete; it
  must be thread-safe (the Runner passes ``loop.call_soon_threadsafe``).

What each watch selects (``plan``), all namespaces unless
FLUXGATE_WATCH_NAMESPACES lists some, then one namespaced watch per
namespace and kind:

  GatewayClass    cluster-wide; ``metadata.name=<FLUXGATE_GATEWAY_CLASS>``,
                  or every class when FLUXGATE_GATEWAYS names the Gateways
                  (they may be of any class; translate checks controllerName)
  Gateway         every Gateway. They are few, and a shard must see the
                  others to know that a route's parentRef to one is another
                  shard's (no status from us), not a missing Gateway (a
                  ``NoMatchingParent``). Which are ours is translate's call:
                  those of our class (the GatewayClass watch sees only ours),
                  or those FLUXGATE_GATEWAYS names (``translate(gateways=)``)
  HTTPRoute, FluxGateRoute (fluxgate.io/v1alpha3), ReferenceGrant (v1beta1),
  Service, EndpointSlice
                  every object (routes attach in translate)
  Ingress         every object, of which those naming another IngressClass
                  (``spec.ingressClassName`` or the legacy annotation) are
                  dropped here; class-less ones are kept (the default class)
  IngressClass    cluster-wide; ``metadata.name=<FLUXGATE_GATEWAY_CLASS>``
                  (a shard's IngressClass is named like its GatewayClass)
  Namespace       cluster-wide, or ``metadata.name=<ns>`` per namespace
                  (their labels serve ``allowedRoutes.namespaces.selector``)
  Secret          ``type=kubernetes.io/tls`` only (what listeners and
                  Ingress TLS can use)

Theory of operation: a watch thread runs ``list → watch → (watch ...) →
re-list`` forever. Its objects live in ``_Watch.objects``; every change goes
through ``_put``/``_drop`` under the source's lock, which keeps the Secret
reference counts and bumps ``_generation``. Lists are paginated (``limit``)
and read with ``_preload_content=False`` and msgspec: the client's typed
models are never built.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

import msgspec
import urllib3
from kubernetes import client
from kubernetes import config as kubeconfig
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from control.objects.raw import KObject
from control.sources.events import Changes
from control.sources.files import Loaded
from control.objects import kinds, validation
from control.objects.kinds import Kind
from control.objects.resources import INGRESS_CLASS_ANNOTATION
from control.retry import Backoff, jittered
from control.retry import backoff_delay  # noqa: F401  (the controller's status passes use it from here)

log = logging.getLogger("fluxgate.kubernetes")

FILE = "kubernetes"  # the "file" of every object, in problems and status
LIST_LIMIT = 500
CONNECT_TIMEOUT = 5.0
LIST_READ_TIMEOUT = 60.0
WATCH_READ_GRACE = 15.0  # a watch silent this long past its timeoutSeconds is dead
BACKOFF_BASE = 0.2
BACKOFF_CAP = 30.0
PERIOD_JITTER = 0.1  # resync and re-list periods run up to 10 % late
TLS_SECRET_TYPE = "kubernetes.io/tls"

_CUSTOM_GROUPS = kinds.OWN_GROUPS  # served by CRDs: the custom-objects API, maybe not installed


GATEWAY_CLASS = kinds.BY_KIND["GatewayClass"]
GATEWAY = kinds.BY_KIND["Gateway"]
HTTP_ROUTE = kinds.BY_KIND["HTTPRoute"]
REFERENCE_GRANT = kinds.BY_KIND["ReferenceGrant"]
FLUXGATE_ROUTE = kinds.BY_KIND["FluxGateRoute"]
INGRESS = kinds.BY_KIND["Ingress"]
INGRESS_CLASS = kinds.BY_KIND["IngressClass"]
SERVICE = kinds.BY_KIND["Service"]
ENDPOINT_SLICE = kinds.BY_KIND["EndpointSlice"]
NAMESPACE = kinds.BY_KIND["Namespace"]
SECRET = kinds.BY_KIND["Secret"]

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


@dataclass(frozen=True)
class Settings:
    """What a shard watches (from FLUXGATE_GATEWAYS, _GATEWAY_CLASS, _WATCH_NAMESPACES)."""

    gateway_class: str = "fluxgate"
    gateways: tuple[str, ...] = ()  # "namespace/name"
    namespaces: tuple[str, ...] = ()  # () = all
    resync_seconds: float = 15.0
    relist_seconds: float = 600.0  # 0: never on a timer

    @classmethod
    def from_config(cls, cfg) -> "Settings":
        return cls(gateway_class=cfg.gateway_class, gateways=tuple(cfg.gateways),
                   namespaces=tuple(cfg.watch_namespaces), resync_seconds=cfg.resync_seconds,
                   relist_seconds=cfg.relist_seconds)


@dataclass(frozen=True)
class WatchSpec:
    """One list + watch: a kind, a namespace (None: all / cluster) and selectors."""

    kind: Kind
    namespace: str | None = None
    field_selector: str = ""
    keep: Callable[[dict], bool] | None = field(default=None, compare=False)
    keep_doc: str = ""  # what ``keep`` keeps, for describe()

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        sel = f" [{self.field_selector}]" if self.field_selector else ""
        return f"{self.kind.kind}{where}{sel}"


def plan(settings: Settings) -> list[WatchSpec]:
    """The watches of one shard (the module docstring says why each selects what)."""
    scopes: tuple[str | None, ...] = settings.namespaces or (None,)
    cls = settings.gateway_class
    specs = [WatchSpec(GATEWAY_CLASS, None, "" if settings.gateways else f"metadata.name={cls}")]
    specs += [WatchSpec(GATEWAY, ns) for ns in scopes]
    for kind in (HTTP_ROUTE, FLUXGATE_ROUTE, REFERENCE_GRANT, SERVICE, ENDPOINT_SLICE):
        specs += [WatchSpec(kind, ns) for ns in scopes]
    specs += [WatchSpec(INGRESS, ns, keep=functools.partial(_ingress_of_class, cls),
                        keep_doc=f"class {cls} or none") for ns in scopes]
    specs.append(WatchSpec(INGRESS_CLASS, None, f"metadata.name={cls}"))
    if settings.namespaces:
        specs += [WatchSpec(NAMESPACE, None, f"metadata.name={ns}") for ns in settings.namespaces]
    else:
        specs.append(WatchSpec(NAMESPACE))
    specs += [WatchSpec(SECRET, ns, f"type={TLS_SECRET_TYPE}") for ns in scopes]
    return specs


def _ingress_of_class(cls: str, raw: dict) -> bool:
    name = _get(raw, "spec", "ingressClassName")
    if name is None:
        name = _get(raw, "metadata", "annotations", INGRESS_CLASS_ANNOTATION)
    return name is None or name == cls


def _get(raw: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(raw, dict):
            return None
        raw = raw.get(part)
    return raw


def secret_refs(kind: str, raw: dict) -> frozenset[tuple[str, str]]:
    """The (namespace, name) of the Secrets a Gateway or an Ingress references."""
    ns = _get(raw, "metadata", "namespace") or validation.DEFAULT_NAMESPACE
    found: set[tuple[str, str]] = set()
    if kind == "Gateway":
        for listener in _as_list(_get(raw, "spec", "listeners")):
            for ref in _as_list(_get(listener, "tls", "certificateRefs")):
                if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
                    continue
                if (ref.get("group") or "") == "" and (ref.get("kind") or "Secret") == "Secret":
                    found.add((ref.get("namespace") or ns, ref["name"]))
    elif kind == "Ingress":
        for tls in _as_list(_get(raw, "spec", "tls")):
            name = _get(tls, "secretName")
            if isinstance(name, str) and name:
                found.add((ns, name))
    return frozenset(found)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


NOT_INSTALLED = "not installed"


class NotInstalled(Exception):
    """The API does not serve the kind (404 on its list): its CRD is not installed."""


class Gone(Exception):
    """410: the resourceVersion is older than the server's history; re-list."""


class Interrupted(Exception):
    """A watch stream that was open broke (a cut connection, a read timeout)."""


class WatchError(Exception):
    """An ERROR event other than 410."""


class _Watch:
    """One WatchSpec's state. Touched by its thread; objects under the source lock."""

    def __init__(self, spec: WatchSpec, backoff: Backoff) -> None:
        self.spec = spec
        self.backoff = backoff  # the current streak of failures
        self.objects: dict[tuple[str, str], dict] = {}  # (namespace, name) → raw
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

    def describe(self) -> dict:
        return {"watch": str(self.spec), "keep": self.spec.keep_doc, "synced": self.synced,
                "resourceVersion": self.rv, "objects": len(self.objects), "lists": self.lists,
                "watches": self.watches, "gone": self.gone, "error": self.error}


class KubernetesSource:
    """List + watch the Kubernetes API; ``fingerprint``/``load`` like FileSource."""

    def __init__(self, configuration: client.Configuration, settings: Settings = Settings(), *,
                 specs: list[WatchSpec] | None = None, list_limit: int = LIST_LIMIT,
                 backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP) -> None:
        """``configuration``: the client's (host, credentials, TLS); its connection
        pool is enlarged to hold one connection per watch plus room for lists.
        ``specs``: the watches to run (default ``plan(settings)``; the controller
        passes its wider plan); ``settings.resync_seconds`` applies to them all."""
        self.settings = settings
        self.list_limit = list_limit
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._watches = [_Watch(spec, Backoff(backoff_base, backoff_cap))
                         for spec in (plan(settings) if specs is None else specs)]
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0,
                                                    len(self._watches) + 4)
        configuration.retries = False  # our back-off retries, and logs once per streak
        self.api_client = client.ApiClient(configuration)
        self._lock = threading.Lock()
        self._generation = 0
        self._refs: dict[tuple[str, str, str], frozenset[tuple[str, str]]] = {}  # per Gateway/Ingress
        self._ref_counts: Counter[tuple[str, str]] = Counter()
        # For changes(): the objects changed since the last call, by (kind, ns, name):
        # the raw object now, or the last one seen when it was deleted (None: dropped).
        self._dirty: dict[tuple[str, str, str], tuple[dict, bool]] = {}
        self._delivered_secrets: dict[tuple[str, str], dict] = {}  # Secrets changes() handed out
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._on_change: Callable[[], None] = lambda: None
        self._synced_at = 0.0
        self._started_at = 0.0

    def __repr__(self) -> str:
        return f"KubernetesSource({self.host!r})"

    @property
    def host(self) -> str:
        return self.api_client.configuration.host

    @classmethod
    def from_config(cls, cfg) -> "KubernetesSource":
        """A source for ``cfg`` (FLUXGATE_KUBECONFIG, else in-cluster, else
        $KUBECONFIG or ~/.kube/config). Raises ``ConfigError`` when none loads."""
        from control.config import ConfigError

        configuration = client.Configuration()
        try:
            if cfg.kubeconfig:
                where = f"FLUXGATE_KUBECONFIG={cfg.kubeconfig!r}"
                if not os.path.isfile(cfg.kubeconfig):
                    raise ConfigError(f"{where}: no such file")
                kubeconfig.load_kube_config(config_file=cfg.kubeconfig,
                                            client_configuration=configuration)
            elif _in_cluster():
                where = "in-cluster (service account)"
                kubeconfig.load_incluster_config(client_configuration=configuration)
            else:
                where = f"{kubeconfig.KUBE_CONFIG_DEFAULT_LOCATION} (not in a cluster)"
                kubeconfig.load_kube_config(client_configuration=configuration)
        except ConfigError:
            raise
        except Exception as exc:  # any reason, reported at start with where it came from
            raise ConfigError(f"cannot load the Kubernetes client configuration from {where}: "
                              f"{exc}") from None
        return cls(configuration, Settings.from_config(cfg))

    # --- life cycle -----------------------------------------------------------------

    def start(self, on_change: Callable[[], None] | None = None) -> None:
        """Start one thread per watch; ``on_change`` is called from them."""
        if on_change is not None:
            self._on_change = on_change
        self._started_at = time.monotonic()
        for w in self._watches:
            name = f"kube-{w.spec.kind.kind}-{w.spec.namespace or 'all'}"
            thread = threading.Thread(target=self._run, args=(w,), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop every watch (open streams are cut) and wait for the threads."""
        self._stopping.set()
        for w in self._watches:
            _cut(w.response)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        self.api_client.close()

    # --- what the Runner reads ------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Every watch's first list has succeeded."""
        return all(w.synced for w in self._watches)

    def waiting(self) -> str:
        """Why not synced yet ("" when synced), for /readyz: each error with its watches."""
        by_error: dict[str, list[str]] = {}
        for w in self._watches:
            if not w.synced:
                by_error.setdefault(w.error or "not listed yet", []).append(str(w.spec))
        if not by_error:
            return ""
        parts = []
        for error, names in by_error.items():
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            parts.append(f"{error} ({', '.join(names[:3])}{more})")
        return f"waiting for the initial lists from the Kubernetes API at {self.host}: " + "; ".join(parts)

    def fingerprint(self) -> Hashable:
        """Changes whenever an object that can matter changed."""
        return self._generation

    def load(self) -> Loaded:
        read_secrets = ("v1", "Secret") in validation.KINDS
        with self._lock:
            snapshot = [(w.spec.kind.kind, list(w.objects.items())) for w in self._watches]
            referenced = set(self._ref_counts)
        objects = []
        for kind, items in snapshot:
            if kind == "Secret":
                if not read_secrets:
                    continue
                items = [(key, raw) for key, raw in items if key in referenced]
            objects.extend((kind, key, raw) for key, raw in items)
        objects.sort(key=lambda o: (o[0], o[1]))
        return Loaded(objects=[KObject(raw, FILE, 0) for _, _, raw in objects], files=[FILE])

    def changes(self) -> Changes:
        """What changed since the last call (the first call: every object), as
        ``load()`` would show it: ``upserts`` are the objects to (re)read,
        ``deletes`` those gone (their last version, for the key). Applying every
        ``changes()`` in turn to an ``ObjectCache`` (``apply_changes``) leaves it
        as ``apply(load())`` would. Cost: the changed objects, not all of them."""
        read_secrets = ("v1", "Secret") in validation.KINDS
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            upserts: dict[tuple[str, str, str], dict] = {}
            deletes: dict[tuple[str, str, str], dict] = {}
            for (kind, ns, name), (raw, present) in dirty.items():
                if kind == "Secret":
                    continue
                (upserts if present else deletes)[(kind, ns, name)] = raw
            if read_secrets:
                # A Secret is in load() while it exists and is referenced: compare
                # with what was handed out, for the dirty ones and every reference.
                now: dict[tuple[str, str], dict] = {}
                for w in self._watches:
                    if w.spec.kind.kind == "Secret":
                        for key in self._ref_counts:
                            raw = w.objects.get(key)
                            if raw is not None:
                                now[key] = raw
                for key, raw in now.items():
                    if self._delivered_secrets.get(key) is not raw or ("Secret", *key) in dirty:
                        upserts[("Secret", *key)] = raw
                for key, raw in self._delivered_secrets.items():
                    if key not in now:
                        deletes[("Secret", *key)] = raw
                self._delivered_secrets = now
        return Changes(upserts=[KObject(upserts[k], FILE, 0) for k in sorted(upserts)],
                       deletes=[KObject(deletes[k], FILE, 0) for k in sorted(deletes)])

    def describe(self) -> list[dict]:
        return [w.describe() for w in self._watches]

    # --- one watch's thread ---------------------------------------------------------

    def _run(self, w: _Watch) -> None:
        while not self._stopping.is_set():
            try:
                if w.rv is None or time.monotonic() >= w.relist_at:
                    self._list(w)
                if time.monotonic() >= w.resync_at:
                    w.resync_at = self._next_resync()
                self._watch(w)
            except NotInstalled as exc:
                # Like an empty list, so the gateway serves everything else; asked
                # again every resync period, so installing the CRD later is seen.
                if not w.error.startswith(NOT_INSTALLED):
                    log.warning("Kubernetes kind not served by the API (its CRD is not installed?):"
                                " treated as empty, checked again with back-off", extra={"fields": {
                                    "watch": str(w.spec), "api": self.host, "error": str(exc)}})
                w.error = f"{NOT_INSTALLED} ({exc})"
                w.backoff.fail()  # soon at first (a CRD being installed), then every BACKOFF_CAP
                self._stopping.wait(w.backoff.delay())
            except Gone as exc:
                w.gone += 1
                w.rv = None
                log.info("watch history expired (410 Gone); re-listing", extra={"fields": {
                    "watch": str(w.spec), "error": str(exc)}})
            except Interrupted as exc:
                # Normal life (an API server restart, a load balancer): resume from
                # w.rv after a short pause that grows only if it keeps happening
                # without any event in between.
                if self._stopping.is_set():
                    return
                self._failed(w, exc.__cause__ or exc, interrupted=True)
                self._stopping.wait(w.backoff.delay())
            except Exception as exc:  # never end the thread: back off and retry
                if self._stopping.is_set():
                    return
                self._failed(w, exc)
                self._stopping.wait(w.backoff.delay())

    def _list(self, w: _Watch) -> None:
        items: dict[tuple[str, str], dict] = {}
        token = None
        while True:
            params: dict[str, Any] = {"limit": self.list_limit}
            if token:
                params["_continue"] = token
            try:
                resp = self._call(w.spec, _request_timeout=(CONNECT_TIMEOUT, LIST_READ_TIMEOUT),
                                  **params)
            except ApiException as exc:
                if exc.status == 410:  # the continue token expired: start over
                    raise Gone(f"list: {exc.reason}") from None
                if exc.status == 404 and w.spec.kind.group in _CUSTOM_GROUPS:
                    self._listed(w, {}, None)  # its CRD is not installed: no objects
                    raise NotInstalled(describe_error(exc)) from None
                raise
            try:
                data = msgspec.json.decode(resp.data)
            finally:
                resp.release_conn()
            for raw in data.get("items") or ():
                raw = self._clean(w.spec.kind, raw)
                meta = raw["metadata"]
                items[(meta.get("namespace") or "", meta["name"])] = raw
            meta = data.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                rv = meta.get("resourceVersion")
                break
        self._listed(w, items, rv)

    def _listed(self, w: _Watch, items: dict[tuple[str, str], dict], rv: str | None) -> None:
        """A list's result (or, for a kind not installed, no objects) is the truth."""
        changed = self._replace(w, items)
        w.rv = rv or None
        w.lists += 1
        w.resync_at = self._next_resync()
        relist = self.settings.relist_seconds
        w.relist_at = _jittered(relist) if relist else math.inf
        if rv is not None and w.error.startswith(NOT_INSTALLED):
            log.info("Kubernetes kind served by the API now", extra={"fields": {"watch": str(w.spec)}})
        if rv is not None or not w.error.startswith(NOT_INSTALLED):
            self._recovered(w)
        with self._lock:
            w.synced = True
            complete = not self._synced_at and self.synced
            if complete:
                self._synced_at = time.monotonic()
        if complete:
            log.info("initial lists complete", extra={"fields": {
                "watches": len(self._watches), "objects": sum(len(x.objects) for x in self._watches),
                "seconds": round(self._synced_at - self._started_at, 3)}})
            changed = True
        if changed:
            self._on_change()

    def _next_resync(self) -> float:
        return _jittered(self.settings.resync_seconds)

    def _watch(self, w: _Watch) -> None:
        timeout = max(1, int(min(w.resync_at, w.relist_at) - time.monotonic()))
        try:
            resp = self._call(w.spec, watch=True, resource_version=w.rv, allow_watch_bookmarks=True,
                              timeout_seconds=timeout,
                              _request_timeout=(CONNECT_TIMEOUT, timeout + WATCH_READ_GRACE))
        except ApiException as exc:
            if exc.status == 410:  # some servers answer a too-old watch with a 410 response
                raise Gone(f"watch: {exc.reason}") from None
            # An answer, not a lost connection: the version itself may be the problem
            # (504 "too large resource version" after a restore): list again.
            w.rv = None
            raise
        w.response = resp
        w.watches += 1
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
                    w.rv = None  # re-list after the back-off
                    raise WatchError(f"ERROR event {obj.get('code')} {obj.get('reason')}: "
                                     f"{obj.get('message')}")
                self._recovered(w)
                rv = _get(obj, "metadata", "resourceVersion")
                if kind == "BOOKMARK":
                    w.rv = rv or w.rv
                    continue
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    if self._event(w, kind, obj):
                        self._on_change()
                if rv:
                    w.rv = rv
        finally:
            w.response = None
            resp.release_conn()

    def _call(self, spec: WatchSpec, **params: Any):
        """The client's list call for ``spec`` (a urllib3 response: content not preloaded)."""
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

    # --- the object store (under the lock) ------------------------------------------

    @staticmethod
    def _clean(kind: Kind, raw: dict) -> dict:
        """Typed-list items carry no kind/apiVersion; managedFields is never read."""
        raw["apiVersion"], raw["kind"] = kind.api_version, kind.kind
        meta = raw.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise ValueError(f"{kind.kind} without metadata.name from the API")
        meta.pop("managedFields", None)
        return raw

    def _event(self, w: _Watch, kind: str, obj: dict) -> bool:
        raw = self._clean(w.spec.kind, obj)
        meta = raw["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        with self._lock:
            if kind == "DELETED":
                return self._drop(w, key)
            return self._put(w, key, raw)

    def _replace(self, w: _Watch, items: dict[tuple[str, str], dict]) -> bool:
        """A list's result replaces the watch's objects; True if anything mattered."""
        changed = False
        with self._lock:
            for key in [k for k in w.objects if k not in items]:
                changed |= self._drop(w, key)
            for key, raw in items.items():
                changed |= self._put(w, key, raw)
        return changed

    def _put(self, w: _Watch, key: tuple[str, str], raw: dict) -> bool:
        keep = w.spec.keep
        if keep is not None and not keep(raw):
            return self._drop(w, key)
        old = w.objects.get(key)
        rv = raw["metadata"].get("resourceVersion")
        if old is not None and rv and old["metadata"].get("resourceVersion") == rv:
            return False
        w.objects[key] = raw
        self._dirty[(w.spec.kind.kind, *key)] = (raw, True)
        return self._matters(w.spec.kind.kind, key, raw)

    def _drop(self, w: _Watch, key: tuple[str, str]) -> bool:
        old = w.objects.pop(key, None)
        if old is None:
            return False
        self._dirty[(w.spec.kind.kind, *key)] = (old, False)
        return self._matters(w.spec.kind.kind, key, None)

    def _matters(self, kind: str, key: tuple[str, str], raw: dict | None) -> bool:
        """Record the change of one object; True if it bumped the fingerprint."""
        if kind == "Secret":
            if key not in self._ref_counts:
                return False  # nobody references it: no rebuild
        elif kind in ("Gateway", "Ingress"):
            full = (kind, *key)
            old = self._refs.pop(full, frozenset())
            new = secret_refs(kind, raw) if raw is not None else frozenset()
            if new:
                self._refs[full] = new
            self._ref_counts.update(new)
            self._ref_counts.subtract(old)
            for ref in old - new:
                if self._ref_counts[ref] <= 0:
                    del self._ref_counts[ref]
        self._generation += 1
        return True

    # --- errors -----------------------------------------------------------------------

    def _failed(self, w: _Watch, exc: BaseException, interrupted: bool = False) -> None:
        """Count a failure; warn once per streak (a lone interruption is only debug)."""
        failures = w.backoff.fail()
        w.error = describe_error(exc)
        if interrupted and failures == 1:
            log.debug("Kubernetes watch interrupted; resuming", extra={"fields": {
                "watch": str(w.spec), "resourceVersion": w.rv, "error": w.error}})
        elif not w.warned:
            w.warned = True
            log.warning("Kubernetes watch failed; retrying with back-off", extra={"fields": {
                "watch": str(w.spec), "api": self.host, "error": w.error}})
        else:
            log.debug("Kubernetes watch failed again", extra={"fields": {
                "watch": str(w.spec), "failures": failures, "error": w.error}})

    def _recovered(self, w: _Watch) -> None:
        failures = w.backoff.reset()
        if w.warned:
            log.info("Kubernetes watch works again", extra={"fields": {
                "watch": str(w.spec), "failures": failures}})
        w.warned = False
        w.error = ""


def _jittered(period: float) -> float:
    """When a periodic action is next due: ``period`` from now, up to 10 % later,
    so the watches of one process (and of many pods) do not act in step."""
    return time.monotonic() + jittered(period, PERIOD_JITTER)


def _lines(resp) -> Iterable[str]:
    """The stream's lines; a broken stream raises ``Interrupted``."""
    try:
        yield from iter_resp_lines(resp)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Interrupted(str(exc)) from exc


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


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

