"""The object store: every object, one resourceVersion counter, and the history.

Rules (what must stay true):
* one lock (``cond``) guards everything here and the registry; every read and
  write of an object, every history append and every watcher registration
  happens under it, so a watcher registered at version N sees exactly the
  events after N, none twice and none lost;
* the counter ``rv`` grows by one per committed write, over all kinds, like
  etcd's revision; an object's ``metadata.resourceVersion`` is the counter at
  its last write, as a string; a list's is the counter when it was read;
* stored objects are immutable values: a write always stores a fresh dict and
  nothing mutates one once stored, so events and lists share them safely
  across threads (whoever hands one out to a caller that may mutate copies);
* the history keeps the last ``history_size`` events; ``compacted`` is the
  version before the oldest kept event. Reading "as of" a version at or after
  ``compacted`` replays the history backwards (Exact lists and continue
  tokens); older is 410 Expired, as after an etcd compaction;
* deleting emits DELETED with the last state at a new resourceVersion.

Theory of operation: the HTTP layer resolves a Resource, then calls one verb
here; the verb runs ``strategy`` for the kind, checks preconditions, and
``_commit``/``_remove`` append an ``Event`` to the history and offer it to
every watcher of that resource.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import threading
import time
from collections import deque

from . import strategy
from .errors import (APIError, already_exists, bad_request, conflict, expired, invalid,
                     not_found, too_large_resource_version)
from .registry import Registry, resource_from_crd
from .watch import ADDED, DELETED, MODIFIED, Event, Watcher

_NAMESPACES = ("", "namespaces")
_CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list.")


def sort_key(ns: str | None, name: str) -> str:
    """Objects list in etcd key order: "<namespace>/<name>"."""
    return f"{ns}/{name}" if ns else name


class Store:
    def __init__(self, registry: Registry, history_size: int = 10000, rv_wait: float = 3.0):
        self.registry = registry
        self.cond = threading.Condition(threading.RLock())
        self.history_size = history_size
        self.rv_wait = rv_wait
        self.rv = 0
        self.compacted = 0
        self._objects: dict[tuple[str, str], dict[tuple[str | None, str], dict]] = {}
        self._history: deque[Event] = deque()
        self._watchers: list[Watcher] = []
        self._next_ip = 10
        self._next_node_port = 30000

    @property
    def resource_version(self) -> int:
        return self.rv

    # -- reads ------------------------------------------------------------------------

    def get(self, resource, ns: str | None, name: str) -> dict:
        with self.cond:
            obj = self._objects.get(resource.key, {}).get((ns, name))
            if obj is None:
                raise not_found(resource, name)
            return obj

    def find(self, resource, ns: str | None, name: str) -> dict | None:
        with self.cond:
            return self._objects.get(resource.key, {}).get((ns, name))

    def list(self, resource, ns, labels, fields, rv: int | None = None, match: str | None = None,
             limit: int | None = None, token: str | None = None):
        """(items, list resourceVersion, continue token or "", remainingItemCount or None)."""
        with self.cond:
            start = ""
            if token:
                list_rv, start = _decode_continue(token)
                if list_rv < self.compacted:
                    raise expired(_CONTINUE_TOO_OLD)
                objects = self._as_of(resource, list_rv)
            elif match == "Exact" and rv:
                self._wait_for(rv)
                if rv < self.compacted:
                    raise expired("The resourceVersion for the provided list is too old.")
                list_rv, objects = rv, self._as_of(resource, rv)
            else:
                if rv:
                    self._wait_for(rv)
                list_rv, objects = self.rv, self._objects.get(resource.key, {})
            rows = sorted(((sort_key(k[0], k[1]), obj) for k, obj in objects.items()
                           if ns is None or k[0] == ns), key=lambda row: row[0])
            rows = [(key, obj) for key, obj in rows if key > start
                    and labels.matches(obj["metadata"].get("labels"))
                    and fields.matches(obj)]
            if limit and len(rows) > limit:
                remaining = None if (labels or fields) else len(rows) - limit
                token = _encode_continue(list_rv, rows[limit - 1][0] + "\x00")
                return [obj for _, obj in rows[:limit]], list_rv, token, remaining
            return [obj for _, obj in rows], list_rv, "", None

    def _as_of(self, resource, rv: int) -> dict:
        """The objects of ``resource`` as they were at version ``rv``."""
        objects = dict(self._objects.get(resource.key, {}))
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.key != resource.key:
                continue
            meta = event.obj["metadata"]
            key = (meta.get("namespace"), meta["name"])
            if event.type == ADDED:
                objects.pop(key, None)
            else:
                objects[key] = event.prev
        return objects

    def _wait_for(self, rv: int) -> None:
        deadline = time.monotonic() + self.rv_wait
        while self.rv < rv:
            left = deadline - time.monotonic()
            if left <= 0:
                raise too_large_resource_version(rv, self.rv)
            self.cond.wait(left)

    # -- writes -----------------------------------------------------------------------

    def create(self, resource, ns: str | None, body: dict, dry_run: bool = False) -> dict:
        with self.cond:
            obj = copy.deepcopy(body)
            meta = obj["metadata"]
            if resource.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match "
                                      "the namespace sent on the request")
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(resource, ns, meta["generateName"])
            if not meta.get("name"):
                raise invalid(resource, "", [
                    ("FieldValueRequired", "metadata.name",
                     "Required value: name or generateName is required")])
            if meta.get("resourceVersion"):
                raise APIError(500, "InternalError",
                               "resourceVersion should not be set on objects to be created")
            if resource.namespaced and (None, ns) not in self._objects.get(_NAMESPACES, {}):
                raise not_found(self.registry.get(*_NAMESPACES), ns)
            if (ns, meta["name"]) in self._objects.get(resource.key, {}):
                raise already_exists(resource, meta["name"])
            obj["apiVersion"], obj["kind"] = resource.api_version(), resource.kind
            obj = strategy.prepare_create(resource, obj, self)
            strategy.validate(resource, obj, None)
            if dry_run:
                return obj
            self._commit(resource, ADDED, obj, None)
            return obj

    def update(self, resource, ns: str | None, name: str, body: dict,
               subresource: str | None = None, dry_run: bool = False) -> tuple[dict, bool]:
        """(stored object, created)."""
        with self.cond:
            new = copy.deepcopy(body)
            meta = new["metadata"]
            if meta.get("name") != name:
                raise bad_request(f"the name of the object ({meta.get('name', '')}) does not "
                                  f"match the name on the URL ({name})")
            if resource.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match "
                                      "the namespace sent on the request")
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            cur = self._objects.get(resource.key, {}).get((ns, name))
            if cur is None:
                if resource.create_on_update and subresource is None:
                    meta.pop("resourceVersion", None)
                    return self.create(resource, ns, new, dry_run), True
                raise not_found(resource, name)
            cur_meta = cur["metadata"]
            stale = meta.get("resourceVersion") not in (None, "", cur_meta["resourceVersion"])
            if stale:
                raise conflict(resource, name)
            if meta.get("uid") and meta["uid"] != cur_meta["uid"]:
                raise conflict(resource, name,
                               f"Precondition failed: UID in precondition: {meta['uid']}, "
                               f"UID in object meta: {cur_meta['uid']}")
            new["apiVersion"], new["kind"] = resource.api_version(), resource.kind
            if subresource == "status":
                new = strategy.prepare_status_update(resource, new, cur)
            else:
                new = strategy.prepare_update(resource, new, cur, self)
            strategy.validate(resource, new, cur)
            new["metadata"]["resourceVersion"] = cur_meta["resourceVersion"]
            if new == cur or dry_run:
                return (cur if new == cur else new), False
            if cur_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                gone = self._remove(resource, cur)
                rv = gone["metadata"]["resourceVersion"]
                return dict(new, metadata=dict(new["metadata"], resourceVersion=rv)), False
            self._commit(resource, MODIFIED, new, cur)
            return new, False

    def patch(self, resource, version: str, ns: str | None, name: str, apply, subresource=None,
              dry_run: bool = False, create_missing: bool = False) -> tuple[dict, bool]:
        """Read, ``apply(current) -> patched``, then update; all under the lock."""
        with self.cond:
            cur = self._objects.get(resource.key, {}).get((ns, name))
            if cur is None:
                if not create_missing:
                    raise not_found(resource, name)
                body = apply({})
                check_body(resource, version, body)
                body["metadata"].setdefault("name", name)
                return self.create(resource, ns, body, dry_run), True
            target = copy.deepcopy(cur)
            target["apiVersion"] = resource.api_version(version)
            patched = apply(target)
            check_body(resource, version, patched)
            return self.update(resource, ns, name, patched, subresource, dry_run)

    def delete(self, resource, ns: str | None, name: str, options: dict | None = None,
               dry_run: bool = False) -> tuple[dict, bool]:
        """(object, deleted now); not deleted now while finalizers remain."""
        with self.cond:
            cur = self.get(resource, ns, name)
            pre = (options or {}).get("preconditions") or {}
            meta = cur["metadata"]
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise conflict(resource, name, f"Precondition failed: UID in precondition: "
                                               f"{pre['uid']}, UID in object meta: {meta['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise conflict(resource, name,
                               f"Precondition failed: ResourceVersion in precondition: "
                               f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                               f"{meta['resourceVersion']}")
            if dry_run:
                return cur, True
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return cur, False
                deleting = strategy.start_deletion(resource, cur)
                self._commit(resource, MODIFIED, deleting, cur)
                return deleting, False
            if resource.key == _NAMESPACES:
                self._remove_namespace_contents(name)
            if resource.key == _CRDS:
                self._remove_custom_resources(cur)
            return self._remove(resource, cur), True

    def delete_collection(self, resource, ns, labels, fields, options=None,
                          dry_run: bool = False) -> list[dict]:
        with self.cond:
            items, _, _, _ = self.list(resource, ns, labels, fields)
            out = []
            for obj in items:
                meta = obj["metadata"]
                out.append(self.delete(resource, meta.get("namespace"), meta["name"], options,
                                       dry_run)[0])
            return out

    def _remove_namespace_contents(self, ns: str) -> None:
        for resource in self.registry:
            if resource.namespaced:
                for (obj_ns, _), obj in list(self._objects.get(resource.key, {}).items()):
                    if obj_ns == ns:
                        self._remove(resource, obj)

    def _remove_custom_resources(self, crd: dict) -> None:
        spec = crd.get("spec") or {}
        plural = (spec.get("names") or {}).get("plural", "")
        resource = self.registry.get(spec.get("group", ""), plural)
        if resource is None or not resource.custom:
            return
        for obj in list(self._objects.get(resource.key, {}).values()):
            self._remove(resource, obj)
        self.registry.remove(*resource.key)
        self._objects.pop(resource.key, None)
        for watcher in self._watchers:  # the real server stops serving them too
            if watcher.resource.key == resource.key:
                watcher.end()

    # -- commit ------------------------------------------------------------------------

    def _commit(self, resource, kind: str, obj: dict, prev: dict | None) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        meta = obj["metadata"]
        self._objects.setdefault(resource.key, {})[(meta.get("namespace"), meta["name"])] = obj
        if resource.key == _CRDS:
            self.registry.add(resource_from_crd(obj))
        self._record(Event(self.rv, kind, resource.key, obj, prev))

    def _remove(self, resource, cur: dict) -> dict:
        self.rv += 1
        meta = cur["metadata"]
        gone = dict(cur, metadata=dict(meta, resourceVersion=str(self.rv)))
        del self._objects[resource.key][(meta.get("namespace"), meta["name"])]
        self._record(Event(self.rv, DELETED, resource.key, gone, cur))
        return gone

    def _record(self, event: Event) -> None:
        self._history.append(event)
        while len(self._history) > self.history_size:
            self.compacted = self._history.popleft().rv
        for watcher in self._watchers:
            if watcher.resource.key == event.key:
                watcher.offer(event)
        self.cond.notify_all()

    # the allocator strategy needs: cluster IPs and node ports, never reused
    def allocate_ip(self) -> str:
        n = self._next_ip
        self._next_ip += 1
        return f"10.96.{n // 250}.{n % 250 + 1}"

    def allocate_node_port(self) -> int:
        self._next_node_port += 1
        return self._next_node_port

    def _generate_name(self, resource, ns, prefix: str) -> str:
        existing = self._objects.get(resource.key, {})
        while True:
            name = prefix + "".join(random.choice(_GENERATE_ALPHABET) for _ in range(5))
            if (ns, name) not in existing:
                return name

    # -- watches and history ----------------------------------------------------------

    def watch(self, watcher: Watcher, rv: int | None, send_initial: bool,
              mark_initial_end: bool = False) -> None:
        """Register ``watcher`` and queue what it must see first; raises 410 Expired.

        ``send_initial``: synthetic ADDED events for the current objects, then
        live events; ``mark_initial_end`` (sendInitialEvents=true) also queues
        the bookmark that says the initial events are over.
        """
        with self.cond:
            if rv:
                if rv < self.compacted:
                    raise expired(f"too old resource version: {rv} ({self.compacted})")
                self._wait_for(rv)
            key = watcher.resource.key
            if send_initial:
                objects = self._objects.get(key, {})
                for k in sorted(objects, key=lambda k: sort_key(*k)):
                    obj = objects[k]
                    watcher.offer(Event(int(obj["metadata"]["resourceVersion"]), ADDED, key,
                                        obj, None))
                if mark_initial_end:
                    watcher.initial_end(self.rv)
            elif rv:
                for event in self._history:
                    if event.rv > rv and event.key == key:
                        watcher.offer(event)
            self._watchers.append(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        with self.cond:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def watchers(self) -> list[Watcher]:
        with self.cond:
            return list(self._watchers)

    def bookmark_version(self, watcher: Watcher) -> int | None:
        """The version a bookmark may claim now, or None while events are queued."""
        with self.cond:
            return self.rv if watcher.idle() else None

    def compact(self) -> int:
        """Forget all history: any version before now is too old from here on."""
        with self.cond:
            self._history.clear()
            self.compacted = self.rv
            return self.rv

def check_body(resource, version: str, body) -> None:
    """A request body must be an object of this kind at this version (or say neither)."""
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be an object")
    if not isinstance(body.setdefault("metadata", {}), dict):
        raise bad_request("metadata must be an object")
    want = resource.api_version(version)
    if body.get("apiVersion") not in (None, "", want):
        raise bad_request(f"the API version in the data ({body['apiVersion']}) does not "
                          f"match the expected API version ({want})")
    if body.get("kind") not in (None, "", resource.kind):
        raise bad_request(f"the kind in the data ({body['kind']}) does not match the "
                          f"expected kind ({resource.kind})")


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request("continue key is not valid: illegal base64 data at input byte 0")
