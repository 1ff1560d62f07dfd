"""The store: the objects the Kubernetes source holds, and what changed since when.

Each watch fills one ``Bucket`` (its objects by (namespace, name), as the API
last showed them); the reflectors (reflector.py) write, the Runner reads
(``load``, ``changes``, ``generation``). Rules (what must stay true):

* One lock (``Store.lock``) guards every bucket, the Secret references
  (secrets.py) and the change bookkeeping; a write and the bookkeeping it
  causes happen under it together, so a reader never sees one without the
  other.
* ``generation`` changes exactly when an event or re-list changed an object
  that can matter: a changed object whose resourceVersion did not change
  counts as no change; a Secret counts only while it is referenced
  (secrets.py). Everything else bumps it, including a status-only change of
  a route (the ``ObjectCache`` decides whether that matters to translation).
* A watch's ``keep`` (e.g. an Ingress of our class) is applied on arrival: an
  object it rejects is dropped as if deleted, so moving an Ingress to another
  class removes it here.
* Every object is ``clean``ed on arrival: typed-list items carry no
  kind/apiVersion (they are set from the watch's kind), and
  ``metadata.managedFields`` (never read, often the largest part) is dropped.
* ``load()`` is a snapshot under the lock: each object is a ``KObject`` with
  ``file`` "kubernetes" (``FILE``), so problems read "kubernetes HTTPRoute
  ns/name: rejected: ...". The source never mutates a dict once stored
  (every list and event decodes new ones), so a snapshot stays as it was.
* ``changes()`` returns what changed since the last call (the first call:
  every object), as ``load()`` would show it. Applying every ``changes()`` in
  turn to an ``ObjectCache`` (``apply_changes``) leaves it as ``apply(load())``
  would. Its cost is the changed objects, not all of them: ``_dirty`` keeps,
  per (kind, namespace, name), the last version seen and whether it exists.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from control.objects.kinds import Kind
from control.objects.raw import KObject
from control.sources.events import Changes
from control.sources.files import Loaded
from control.sources.kubernetes.secrets import SecretRefs, cache_reads_secrets

FILE = "kubernetes"  # the "file" of every object, in problems and status

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds


class Bucket:
    """One watch's objects. Read and written only under the store's lock."""

    __slots__ = ("kind", "keep", "objects")

    def __init__(self, kind: Kind, keep: Callable[[dict], bool] | None = None) -> None:
        self.kind = kind
        self.keep = keep  # None: every object the watch selects
        self.objects: dict[Key, dict] = {}  # (namespace, name) → raw


class Store:
    """Every bucket of one source, the Secret references, and the change log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets = SecretRefs()
        self._buckets: list[Bucket] = []
        self._generation = 0
        # For changes(): the objects changed since the last call, by (kind, ns, name):
        # the raw object now, or the last one seen when it was deleted (False).
        self._dirty: dict[tuple[str, str, str], tuple[dict, bool]] = {}

    def bucket(self, kind: Kind, keep: Callable[[dict], bool] | None = None) -> Bucket:
        """A new, empty bucket for one watch (in ``load`` order: the order made)."""
        bucket = Bucket(kind, keep)
        self._buckets.append(bucket)
        return bucket

    @property
    def generation(self) -> int:
        """Bumped by every change that can matter (the source's fingerprint)."""
        return self._generation

    def count(self) -> int:
        """How many objects the buckets hold."""
        return sum(len(b.objects) for b in self._buckets)

    # --- writes (from the reflectors' threads) ----------------------------------------

    @staticmethod
    def clean(kind: Kind, raw: dict) -> dict:
        """Typed-list items carry no kind/apiVersion; managedFields is never read."""
        raw["apiVersion"], raw["kind"] = kind.api_version, kind.kind
        meta = raw.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise ValueError(f"{kind.kind} without metadata.name from the API")
        meta.pop("managedFields", None)
        return raw

    def event(self, bucket: Bucket, kind: str, obj: dict) -> bool:
        """A watch event (ADDED, MODIFIED, DELETED); True if it mattered."""
        raw = self.clean(bucket.kind, obj)
        meta = raw["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        with self.lock:
            if kind == "DELETED":
                return self._drop(bucket, key)
            return self._put(bucket, key, raw)

    def replace(self, bucket: Bucket, items: dict[Key, dict]) -> bool:
        """A list's result replaces the bucket's objects; True if anything mattered."""
        changed = False
        with self.lock:
            for key in [k for k in bucket.objects if k not in items]:
                changed |= self._drop(bucket, key)
            for key, raw in items.items():
                changed |= self._put(bucket, key, raw)
        return changed

    def _put(self, bucket: Bucket, key: Key, raw: dict) -> bool:
        keep = bucket.keep
        if keep is not None and not keep(raw):
            return self._drop(bucket, key)
        old = bucket.objects.get(key)
        rv = raw["metadata"].get("resourceVersion")
        if old is not None and rv and old["metadata"].get("resourceVersion") == rv:
            return False
        bucket.objects[key] = raw
        self._dirty[(bucket.kind.kind, *key)] = (raw, True)
        return self._matters(bucket.kind.kind, key, raw)

    def _drop(self, bucket: Bucket, key: Key) -> bool:
        old = bucket.objects.pop(key, None)
        if old is None:
            return False
        self._dirty[(bucket.kind.kind, *key)] = (old, False)
        return self._matters(bucket.kind.kind, key, None)

    def _matters(self, kind: str, key: Key, raw: dict | None) -> bool:
        """Record the change of one object; True if it bumped the generation."""
        if kind == "Secret":
            if not self.secrets.referenced(key):
                return False  # nobody references it: no rebuild
        elif kind in ("Gateway", "Ingress"):
            self.secrets.track(kind, key, raw)
        self._generation += 1
        return True

    # --- reads (from the Runner) ----------------------------------------------------

    def load(self) -> Loaded:
        read_secrets = cache_reads_secrets()
        with self.lock:
            snapshot = [(b.kind.kind, list(b.objects.items())) for b in self._buckets]
            referenced = self.secrets.keys()
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
        """What changed since the last call (the module docstring says what holds):
        ``upserts`` are the objects to (re)read, ``deletes`` those gone (their
        last version, for the key)."""
        read_secrets = cache_reads_secrets()
        with self.lock:
            dirty, self._dirty = self._dirty, {}
            upserts: dict[tuple[str, str, str], dict] = {}
            deletes: dict[tuple[str, str, str], dict] = {}
            for (kind, ns, name), (raw, present) in dirty.items():
                if kind == "Secret":
                    continue
                (upserts if present else deletes)[(kind, ns, name)] = raw
            if read_secrets:
                secret_upserts, secret_deletes = self.secrets.changes(self._secret_objects(), dirty)
                upserts.update(secret_upserts)
                deletes.update(secret_deletes)
        return Changes(upserts=[KObject(upserts[k], FILE, 0) for k in sorted(upserts)],
                       deletes=[KObject(deletes[k], FILE, 0) for k in sorted(deletes)])

    def _secret_objects(self) -> Iterable[dict[Key, dict]]:
        return [b.objects for b in self._buckets if b.kind.kind == "Secret"]
