"""A Kubernetes API server for tests: the real client talks to it over real HTTP.

Rules:
* it listens on 127.0.0.1 only, on a port the kernel picks (bind to port 0);
* it answers as kube-apiserver documents it does, for the URLs, verbs,
  status codes, error ``Status`` bodies, metadata, lists, watches and
  discovery a controller uses; where this module and the real server differ,
  the difference is listed below, never silent;
* every response is JSON (``Content-Type: application/json``) whatever the
  ``Accept`` header asks for, protobuf included; request bodies are JSON or
  YAML; every error is a ``Status`` object with the real code and reason;
* tests may reach inside only through ``KubeAPIServer``'s helper methods (and
  the ``/_kubeapi/*`` endpoints that mirror them for the subprocess mode);
  those are the only ways in that a real server lacks.

Theory of operation: ``ThreadingHTTPServer`` speaks HTTP/1.1 with keep-alive,
one thread per connection (handler.py). The handler parses the URL into
(group, version, namespace, plural, name, subresource) against the
``Registry``, then calls one verb on the ``Store``, which holds every object
under one lock, stamps metadata through ``strategy``, keeps a bounded history
of events, and offers each event to the open watches. A watch is a chunked
response, one JSON event per line, written by the connection's own thread from
its ``Watcher`` queue (watch.py). Built-in kinds are registered at start;
Gateway API and FluxGate kinds are CustomResourceDefinition objects created at
start, and any CRD created later is served from the next request on
(catalog.py, registry.py).

Real behaviours kept on purpose, because clients trip over them:
* items of built-in (typed) lists carry no ``kind``/``apiVersion``; custom
  resource lists' items do; single objects and watch events always do;
* create cannot set ``.status`` of a kind with a status subresource, and an
  update that changes nothing keeps the resourceVersion and sends no event;
* a watch from a version older than the history is a 200 with one ERROR event
  (410 Expired) and the end of the stream; an Exact list or a continue token
  that old is a 410 response;
* strategic merge patch is refused (415) for custom resources; apply patches
  need ``fieldManager``; PATCH never creates except apply (201);
* namespaced objects need their namespace to exist (404 otherwise); the
  namespaces default, kube-system, kube-public and kube-node-lease exist.

Deliberately not modelled (differences a test could notice):
* authentication, authorization, admission webhooks, API priority and
  fairness, audit, ``managedFields`` and real server-side apply: an
  ``application/apply-patch+yaml`` patch creates the object or merge-patches
  it (fields are never taken away from another manager);
* garbage collection: ``ownerReferences`` and ``propagationPolicy`` are kept
  but nothing is cascaded, except that deleting a namespace deletes its
  objects at once (no Terminating phase) and deleting a CRD deletes its
  objects, ends its watches and stops serving it;
* controllers: a CRD is Established at once; no ``kubernetes`` Service, no
  Endpoints or EndpointSlices derived from Services, no pods or nodes;
* version conversion: a kind served at several versions stores one copy and
  only its ``apiVersion`` changes (the CRD conversion strategy ``None``); the
  schema and status subresource of the preferred version apply to all;
* CEL validation rules, ``format``, list-type uniqueness and
  ``fieldValidation=Strict`` in CRD schemas; only some built-in defaulting
  (Service cluster IPs, node ports, ports and type, Secret ``stringData``,
  Namespace label/finalizer/phase, Ingress and Service status) and almost no
  built-in validation beyond names, labels, finalizers and cluster IPs;
* field selectors accept any dotted path (the real server answers 400 for
  fields a kind does not index) unless ``strict_field_selectors=True``;
* strategic merge patch merges only the lists in ``patch.MERGE_KEYS`` by key;
* a watch or list from a resourceVersion newer than the server's waits up to
  ``rv_wait`` seconds, then answers 504 (real: the watch cache's 3 s);
* no aggregated discovery, OpenAPI documents, Table output, logs or exec;
  a list never returns fewer than ``limit`` items along with a token; the
  server never closes a watch on its own unless ``watch_timeout`` is set.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import yaml

from .catalog import BUILTINS, INITIAL_NAMESPACES, initial_crds
from .errors import APIError
from .handler import Handler, HTTPServer
from .registry import Registry
from .selectors import FieldSelector, LabelSelector
from .store import Store
from .watch import with_version


class KubeAPIServer:
    """The server, in-process. ``start()``, use ``url``, ``stop()``."""

    def __init__(self, *, bookmark_interval: float = 3.0, history_size: int = 10000,
                 watch_timeout: float | None = None, rv_wait: float = 3.0,
                 strict_field_selectors: bool = False):
        """
        bookmark_interval: seconds between BOOKMARK events of a watch that allows
            them (the first comes as soon as the initial events are sent);
        history_size: events kept for watches and Exact lists; older is 410;
        watch_timeout: end watches that did not say timeoutSeconds after this
            many seconds (None: never, unlike a real server's ~30-60 min);
        rv_wait: how long a request for a future resourceVersion waits (504 after);
        strict_field_selectors: only the field selectors a real server indexes.
        """
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.strict_field_selectors = strict_field_selectors
        self.registry = Registry()
        for resource in BUILTINS:
            self.registry.add(resource)
        self.store = Store(self.registry, history_size=history_size, rv_wait=rv_wait)
        namespaces = self.registry.get("", "namespaces")
        for name in INITIAL_NAMESPACES:
            self.store.create(namespaces, None, {"metadata": {"name": name}})
        crds = self.registry.get("apiextensions.k8s.io", "customresourcedefinitions")
        for crd in initial_crds():
            self.store.create(crds, None, crd)
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, port: int = 0) -> "KubeAPIServer":
        self._httpd = HTTPServer(("127.0.0.1", port), Handler, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,),
                                        name="kubeapi", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        for watcher in self.store.watchers():
            watcher.kill()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "KubeAPIServer":
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests (what a real server has no door for) ----------------------------

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def resource(self, api_version: str, kind: str):
        group, _, version = api_version.rpartition("/")
        resource = self.registry.by_kind(group, version, kind)
        if resource is None:
            raise KeyError(f"no kind {kind} in {api_version}")
        return resource, version

    def apply(self, obj: dict) -> dict:
        """Create or replace ``obj`` (and write its ``.status`` too), like ``kubectl
        apply`` followed by a controller's status update. A namespaced object without
        a namespace goes to "default"; a missing namespace is created first."""
        resource, version = self.resource(obj["apiVersion"], obj["kind"])
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.pop("resourceVersion", None)
        ns = (meta.get("namespace") or "default") if resource.namespaced else None
        with self.store.cond:
            if ns is not None:
                self._ensure_namespace(ns)
            status = obj.pop("status", None) if resource.status else None
            if self.store.find(resource, ns, meta["name"]) is None:
                out = self.store.create(resource, ns, obj)
            else:
                out, _ = self.store.update(resource, ns, meta["name"], obj)
            if status is not None:
                out, _ = self.store.update(resource, ns, meta["name"], dict(out, status=status),
                                           "status")
            return copy.deepcopy(with_version(out, resource.api_version(version)))

    def apply_yaml(self, source: str | Path) -> list[dict]:
        """Apply every document of a YAML text or file (``kind: List`` unrolled)."""
        text = Path(source).read_text() if isinstance(source, Path) or (
            "\n" not in source and Path(source).is_file()) else source
        out = []
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            for obj in doc.get("items", []) if doc.get("kind") == "List" else [doc]:
                out.append(self.apply(obj))
        return out

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None):
        resource, version = self.resource(api_version, kind)
        ns = (namespace or "default") if resource.namespaced else None
        obj = self.store.find(resource, ns, name)
        if obj is None:
            return None
        return copy.deepcopy(with_version(obj, resource.api_version(version)))

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict]:
        resource, version = self.resource(api_version, kind)
        items, _, _, _ = self.store.list(resource, namespace, LabelSelector(""), FieldSelector(""))
        return [copy.deepcopy(with_version(o, resource.api_version(version))) for o in items]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete as the API does (finalizers hold it back); False if it was not there."""
        resource, _ = self.resource(api_version, kind)
        ns = (namespace or "default") if resource.namespaced else None
        try:
            self.store.delete(resource, ns, name)
        except APIError as e:
            if e.code == 404:
                return False
            raise
        return True

    def compact(self) -> int:
        """Forget the watch history: a watch or Exact list from any earlier
        resourceVersion now gets 410 Expired. Returns the current version."""
        return self.store.compact()

    def drop_watches(self, graceful: bool = False) -> int:
        """End every open watch: mid-stream by closing the socket (default), or
        cleanly with the last chunk (``graceful``), as a server restart or a
        request timeout would. Returns how many there were."""
        watchers = self.store.watchers()
        for watcher in watchers:
            watcher.end() if graceful else watcher.kill()
        return len(watchers)

    @property
    def watch_count(self) -> int:
        return len(self.store.watchers())

    def wait_for_watches(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` watches are open."""
        deadline = time.monotonic() + timeout
        while self.watch_count < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _ensure_namespace(self, ns: str) -> None:
        namespaces = self.registry.get("", "namespaces")
        if self.store.find(namespaces, None, ns) is None:
            self.store.create(namespaces, None, {"metadata": {"name": ns}})
