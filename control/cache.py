"""The object cache: typed objects by (kind, namespace, name), last good versions kept.

Rules (issue 2: "a file that does not parse, or an object that is invalid, is
reported and the last good table keeps serving"):

* A file that could not be read or parsed (``Loaded.failed``) keeps every
  object it contributed last time, as it was.
* An object whose new version is invalid keeps its last good version, and the
  error says so. An object never seen valid is simply absent.
* An object that is no longer in any file is gone.
* The same (kind, namespace, name) defined twice: the first in path order
  (file order, then document order) wins; each other one is reported.
* Unsupported kinds are ignored with a warning; they never block anything.
  A kind of FluxGate's or Gateway API's groups that FluxGate does not serve
  (a FluxGatePolicy, a TLSRoute) is a warning that says it is not enforced
  (``is_unserved``): ``fluxgate validate`` makes it an error.

Theory of operation: ``apply`` rebuilds the whole entry map from the new load
plus the entries it must keep, then compares typed objects with the previous
map. Typed resources hold only the fields FluxGate reads, so a change to
``status`` or to an annotation FluxGate ignores compares equal and ``apply``
returns False: no rebuild, no publish. (Annotations FluxGate reads - those
under ``fluxgate.io/`` and the Ingress class ones - do count.) ``apply_changes``
is the incremental form for a source that knows what changed (Kubernetes):
it parses only those objects, so a change costs its own size, not the
cache's. The cache never raises on bad input; everything wrong is
in ``errors`` and ``warnings`` (loader findings included) for the caller to log.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from control.objects.raw import KObject, LoadError, location
from control.sources.files import Loaded
from control.objects import kinds, validation
from control.objects.resources import ObjectKey, Resource, key_order


@dataclass(frozen=True)
class Entry:
    """A resource and where it is defined now."""

    resource: Resource
    file: str
    document: int
    item: int = 0

    @property
    def where(self) -> str:
        return location(self.file, self.document, self.item)


class ObjectCache:
    """The current objects of one source."""

    def __init__(self) -> None:
        self._entries: dict[ObjectKey, Entry] = {}
        self._sorted: tuple[Resource, ...] | None = None  # objects(), until the next change
        # objects() as a list with each key's position: a change that only
        # replaces objects (no key added or gone) patches it in place of a sort.
        self._list: list[Resource] = []
        self._position: dict[ObjectKey, int] = {}
        self.errors: tuple[LoadError, ...] = ()  # of the last apply
        self.warnings: tuple[LoadError, ...] = ()
        # apply_changes: the objects whose latest version was rejected, until a
        # valid one comes or they are deleted (what /debug/status shows).
        self._rejected: dict[ObjectKey, LoadError] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: ObjectKey) -> Resource | None:
        entry = self._entries.get(key)
        return entry.resource if entry else None

    def entry(self, key: ObjectKey) -> Entry | None:
        return self._entries.get(key)

    def rejected(self) -> list[LoadError]:
        """Objects whose latest version is rejected now (``apply_changes``), by key."""
        return [self._rejected[k] for k in sorted(self._rejected, key=key_order)]

    def objects(self) -> tuple[Resource, ...]:
        """Every current object, sorted by key (translate's input)."""
        if self._sorted is None:
            keys = sorted(self._entries, key=key_order)
            self._list = [self._entries[k].resource for k in keys]
            self._position = {k: i for i, k in enumerate(keys)}
            self._sorted = tuple(self._list)
        return self._sorted

    def apply_changes(self, upserts: Iterable[KObject], deletes: Iterable[KObject] = ()) -> bool:
        """Take in only what changed (a source that knows it, e.g.
        ``KubernetesSource.changes()``): parse ``upserts``, drop ``deletes``
        (identified by kind, namespace and name); every other entry stays as it
        is, unparsed. True if any object that matters changed. The rules are
        ``apply``'s for a source whose objects have unique keys (an invalid new
        version keeps the last good one, an unsupported kind is a warning);
        ``errors`` and ``warnings`` are this call's only."""
        errors: list[LoadError] = []
        warnings: list[LoadError] = []
        changed = False
        keys_changed = False
        replaced: list[ObjectKey] = []
        for obj in deletes:
            key = validation.identify(obj)
            if key is not None:
                self._rejected.pop(key, None)
                if self._entries.pop(key, None) is not None:
                    changed = keys_changed = True
        for obj in upserts:
            key = validation.identify(obj)
            if key is None:
                warnings.append(_unsupported(obj))
                continue
            last = self._entries.get(key)
            try:
                resource = validation.parse(obj)
            except validation.Invalid as exc:
                if last is None:
                    error = _problem(obj, key, f"rejected: {exc}")
                else:
                    error = _problem(obj, key, f"rejected, keeping the last good version: {exc}")
                errors.append(error)
                self._rejected[key] = error
                continue
            self._rejected.pop(key, None)
            if last is None:
                changed = keys_changed = True
            elif last.resource != resource:
                changed = True
                replaced.append(key)
            else:
                # Equal: keep the object translate's memo knows (identity); only
                # where it is defined may have moved (a file source's duplicate).
                if (last.file, last.document, last.item) != (obj.file, obj.document, obj.item):
                    self._entries[key] = Entry(last.resource, obj.file, obj.document, obj.item)
                continue
            self._entries[key] = Entry(resource, obj.file, obj.document, obj.item)
        if keys_changed or self._sorted is None:
            self._sorted = None
        elif replaced:
            for key in replaced:
                self._list[self._position[key]] = self._entries[key].resource
            self._sorted = tuple(self._list)
        self.errors = tuple(errors)
        self.warnings = tuple(warnings)
        return changed

    def apply(self, loaded: Loaded) -> bool:
        """Take in a new load; True if any object that matters changed."""
        errors = list(loaded.errors)
        warnings = list(loaded.warnings)
        rank = {path: i for i, path in enumerate(loaded.files)}
        candidates: list[tuple[tuple, ObjectKey, Entry]] = []

        def add(key: ObjectKey, entry: Entry) -> None:
            order = (rank.get(entry.file, len(rank)), entry.file, entry.document, entry.item)
            candidates.append((order, key, entry))

        for obj in loaded.objects:
            key = validation.identify(obj)
            if key is None:
                warnings.append(_unsupported(obj))
                continue
            try:
                resource = validation.parse(obj)
            except validation.Invalid as exc:
                last = self._entries.get(key)
                if last is None:
                    errors.append(_problem(obj, key, f"rejected: {exc}"))
                    continue
                errors.append(_problem(obj, key, f"rejected, keeping the last good version: {exc}"))
                # Keep the old content but at the object's current place, so a
                # later failure of its old file cannot bring in a second copy.
                add(key, replace(last, file=obj.file, document=obj.document, item=obj.item))
                continue
            add(key, Entry(resource, obj.file, obj.document, obj.item))

        for key, entry in self._entries.items():
            if loaded.did_fail(entry.file):
                add(key, entry)

        candidates.sort(key=lambda c: c[0])
        entries: dict[ObjectKey, Entry] = {}
        for _, key, entry in candidates:
            first = entries.get(key)
            if first is None:
                entries[key] = entry
                continue
            if first == entry:  # the same entry kept twice: not a duplicate
                continue
            errors.append(LoadError(entry.file, str(key),
                                    f"ignored: duplicate of the one in {first.where}",
                                    entry.document, entry.item))

        changed = _resources(entries) != _resources(self._entries)
        self._entries = entries
        self._sorted = None
        self.errors = tuple(errors)
        self.warnings = tuple(warnings)
        return changed


def _resources(entries: dict[ObjectKey, Entry]) -> dict[ObjectKey, Resource]:
    return {key: entry.resource for key, entry in entries.items()}


def is_unserved(problem: LoadError) -> bool:
    """A warning about an object of FluxGate's or Gateway API's groups whose
    kind FluxGate does not serve (a FluxGatePolicy, a TLSRoute): configuration
    that would silently not be enforced. ``fluxgate validate`` fails on it."""
    return problem.reason.startswith(_UNSERVED)


_UNSERVED = "not enforced: "


def _unsupported(obj: KObject) -> LoadError:
    what = f"{obj.kind} ({obj.api_version})"
    if kinds.is_own_group(obj.api_version):
        return _problem(obj, None, f"{_UNSERVED}{what} is not a kind FluxGate serves", "warning")
    return _problem(obj, None, f"ignored: unsupported kind {what}", "warning")


def _problem(obj: KObject, key: ObjectKey | None, reason: str, level: str = "error") -> LoadError:
    if key is not None:
        label = str(key)
    else:
        label = f"{obj.kind} {obj.namespace + '/' if obj.namespace else ''}{obj.name}"
    return LoadError(obj.file, label, reason, obj.document, obj.item, level)
