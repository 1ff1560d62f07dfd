"""One open watch: what it wants, what it has been sent, and the streaming loop.

Rules:
* the store hands every committed event of the watched resource to every
  watcher (``offer``), under the store lock and in resourceVersion order, into
  an unbounded queue; the watcher's own thread filters and writes, so a slow
  client never blocks a writer;
* filtering is the watch cache's (``cacheWatcher.convertToWatchEvent``): an
  event is judged against the selector twice, on the new and on the previous
  object. New passes and old did not: ADDED. Both: MODIFIED. Only the old one:
  DELETED, carrying the previous content with the event's resourceVersion, so
  an object that stops matching a label selector leaves the watch as DELETED;
* a BOOKMARK carries only kind, apiVersion and metadata.resourceVersion; its
  version is the store's counter read under the lock while this watcher's
  queue is empty, so it never claims a version whose event is still unsent;
* the stream ends cleanly (last chunk) on ``timeoutSeconds``, on a graceful
  ``drop``, and after an ERROR; a hard ``drop`` closes the socket mid-stream.
"""

from __future__ import annotations

import json
import queue
import select
import socket
import time
from dataclasses import dataclass

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: tuple[str, str]  # the resource's (group, plural)
    obj: dict  # the object after the change; for DELETED the last state at rv
    prev: dict | None  # the object before the change


_INITIAL_END = object()  # queued after the synthetic ADDED events of sendInitialEvents
_END = object()  # end the stream cleanly
_KILL = object()  # close the connection mid-stream


def encode(event_type: str, obj: dict) -> bytes:
    return (json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n").encode()


def with_version(obj: dict, api_version: str, rv: int | None = None) -> dict:
    out = dict(obj, apiVersion=api_version)
    if rv is not None:
        out["metadata"] = dict(obj["metadata"], resourceVersion=str(rv))
    return out


class Watcher:
    def __init__(self, resource, version: str, namespace: str | None, labels, fields,
                 bookmarks: bool, sock: socket.socket | None = None):
        self.resource = resource
        self.api_version = resource.api_version(version)
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.bookmarks = bookmarks
        self.sock = sock
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._initial_rv = 0

    # -- called by the store, under its lock ------------------------------------------

    def offer(self, event: Event) -> None:
        self._queue.put(event)

    def initial_end(self, rv: int) -> None:
        self._initial_rv = rv
        self._queue.put(_INITIAL_END)

    def idle(self) -> bool:
        return self._queue.empty()

    # -- called by anyone ---------------------------------------------------------------

    def end(self) -> None:
        """End the stream cleanly, as an API server restart or timeout does."""
        self._queue.put(_END)

    def kill(self) -> None:
        """Cut the connection mid-stream, as a lost network does."""
        self._queue.put(_KILL)
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- filtering ----------------------------------------------------------------------

    def matches(self, obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def translate(self, event: Event) -> tuple[str, dict] | None:
        cur = event.type != DELETED and self.matches(event.obj)
        old = event.prev is not None and self.matches(event.prev)
        if cur and not old:
            return ADDED, with_version(event.obj, self.api_version)
        if cur and old:
            return MODIFIED, with_version(event.obj, self.api_version)
        if old:
            return DELETED, with_version(event.prev, self.api_version, event.rv)
        return None

    def bookmark(self, rv: int, initial_end: bool = False) -> dict:
        meta: dict = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        return {"kind": self.resource.kind, "apiVersion": self.api_version, "metadata": meta}

    # -- the streaming loop (the handler's thread) --------------------------------------

    def run(self, write, store, timeout: float | None, bookmark_interval: float) -> bool:
        """Stream events until the end; False when the connection must be closed."""
        start = time.monotonic()
        deadline = start + timeout if timeout else None
        next_bookmark = start if self.bookmarks else None
        next_probe = start + 1.0
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return True
            wake = [next_probe]
            if deadline is not None:
                wake.append(deadline)
            if next_bookmark is not None:
                wake.append(next_bookmark)
            try:
                item = self._queue.get(timeout=max(0.0, min(wake) - now))
            except queue.Empty:
                now = time.monotonic()
                if next_bookmark is not None and now >= next_bookmark:
                    rv = store.bookmark_version(self)
                    if rv is not None:
                        write(encode(BOOKMARK, self.bookmark(rv)))
                        next_bookmark = now + bookmark_interval
                if now >= next_probe:
                    if self._client_gone():
                        return False
                    next_probe = now + 1.0
                continue
            if item is _END:
                return True
            if item is _KILL:
                return False
            if item is _INITIAL_END:
                if self.bookmarks:
                    write(encode(BOOKMARK, self.bookmark(self._initial_rv, True)))
                continue
            translated = self.translate(item)
            if translated is not None:
                write(encode(*translated))

    def _client_gone(self) -> bool:
        if self.sock is None:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable) and self.sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
