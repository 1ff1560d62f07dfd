"""The file source: Kubernetes objects read from a YAML file or a directory of them.

Rules:

* ``path`` is one YAML file, or a directory searched recursively for ``*.yaml``
  and ``*.yml``. Files are read in sorted order of their path relative to the
  directory; that order is the "path order" the cache uses to break ties
  between duplicates, so it must not depend on the file system's listing order.
* Names starting with ``.`` are skipped, files and directories alike. A
  Kubernetes ConfigMap volume keeps its real files under ``..data`` and
  ``..<timestamp>`` and links the visible names to them; reading the hidden
  copies too would load every object twice.
* A file either parses whole or not at all. A file that cannot be read or
  parsed contributes no object and is listed in ``Loaded.failed`` so the cache
  keeps what it had from it ("the last good table keeps serving").
* The loader checks only identity: a document must be a mapping with string
  ``apiVersion``, ``kind`` and ``metadata.name``. Kind support and field
  validation belong to the cache (``control/objects/validation.py``), which
  knows the last good version of each object.
* ``kind: List`` documents (what ``kubectl get -o yaml`` writes) are expanded
  into their items.

``fingerprint()`` is cheap (one ``stat`` per file) so the caller can poll it
and call ``changes()`` only when it changes.

Incremental reads (``changes()``, what the pipeline uses; the same interface
as the Kubernetes source's):

* Only files whose (mtime, size, inode) changed are read again, and only
  those whose content hash changed are parsed again. A change is reported
  per object: ``upserts`` (new or changed objects), ``deletes`` (objects no
  longer defined). Every other object is not handed out again, so the cache
  keeps it as it is, by identity, and translation reuses what it made of it.
* A file that fails - it cannot be read, is not valid YAML, or any of its
  documents cannot be identified (a list, a Gateway without metadata.name) -
  keeps its last good version whole: none of its objects changes and none
  is deleted (defect 2: one bad document used to remove every object of its
  file). Its problems are reported once per change (``errors`` of this call)
  and stay in ``problems()`` until the file is good again or gone.
* Duplicates (one key defined twice) are resolved here, once, by path order
  (the first file in path order, then document, then item, wins); each other
  copy is reported ("ignored: duplicate of the one in ..."). The cache thus
  receives at most one object per key, as from the Kubernetes API.
* A root that cannot be listed keeps everything.

``load()`` stays a plain snapshot (every file read now, each document judged
alone); ``fluxgate run``, ``controller`` and ``validate`` read ``changes()``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import yaml

from control.objects import validation
from control.objects.raw import KObject, LoadError
from control.objects.resources import ObjectKey, key_order
from control.sources.events import Changes

try:  # libyaml is an order of magnitude faster; fall back to pure Python.
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class Loaded:
    """What one ``load()`` found."""

    objects: list[KObject] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    warnings: list[LoadError] = field(default_factory=list)
    # Every file read (or tried), in path order.
    files: list[str] = field(default_factory=list)
    # Files, or the root path itself, that could not be read or parsed.
    failed: frozenset[str] = frozenset()

    @property
    def parsed_ok(self) -> bool:
        return not self.failed

    def did_fail(self, file: str) -> bool:
        """Whether ``file`` lies in something that could not be read this time."""
        return any(
            file == bad or file.startswith(bad.rstrip(os.sep) + os.sep)
            for bad in self.failed
        )


@dataclass
class _File:
    """One file as last read: what ``changes()`` compares the next read with."""

    mark: tuple | None = None  # (mtime_ns, size, inode) when last read
    digest: bytes = b""  # of the content last parsed whole (the last good version)
    # The last good version: the objects of each key, in document order.
    objects: dict[ObjectKey, list[KObject]] = field(default_factory=dict)
    unkeyed: list[KObject] = field(default_factory=list)  # kinds validation does not know
    problems: list[LoadError] = field(default_factory=list)  # while it fails, why
    # Document number → (hash of its text, its objects), from the last read: an
    # edit to one document of a thousand parses that one (``_documents``).
    documents: dict[int, tuple[bytes, list[KObject]]] = field(default_factory=dict)


class FileSource:
    """Reads Kubernetes objects from ``path`` (a file or a directory)."""

    synced = True  # files are read whole: never a half-listed world

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._files: dict[str, _File] = {}  # by path, in path order after each read
        self._delivered: dict[ObjectKey, KObject] = {}  # what changes() handed out, by key
        self._root_problem: LoadError | None = None
        self.files_read: list[str] = []  # the files of the last changes(), in path order

    def __repr__(self) -> str:
        return f"FileSource({self.path!r})"

    def files(self) -> list[str]:
        """The YAML files under ``path`` in path order (raises OSError if absent)."""
        if not os.path.isdir(self.path):
            os.stat(self.path)  # a clear FileNotFoundError when it is missing
            return [self.path]
        found: list[tuple[str, str]] = []
        seen: set[str] = set()  # real paths of directories, against symlink loops
        for top, dirs, names in os.walk(self.path, followlinks=True):
            real = os.path.realpath(top)
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if name.startswith(".") or not name.endswith(YAML_SUFFIXES):
                    continue
                full = os.path.join(top, name)
                found.append((os.path.relpath(full, self.path).replace(os.sep, "/"), full))
        return [full for _, full in sorted(found)]

    def fingerprint(self) -> Hashable:
        """Changes whenever a file is added, removed, replaced or written."""
        try:
            files = self.files()
        except OSError as exc:
            return ("unreadable", self.path, type(exc).__name__)
        marks = []
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                marks.append((path, None))
                continue
            marks.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(marks)

    # --- the interface every source offers the pipeline ----------------------------

    def start(self, on_change: Callable[[], None] | None = None) -> None:
        """Nothing to start: the pipeline polls ``fingerprint()``."""

    def close(self) -> None:
        """Nothing to stop."""

    def waiting(self) -> str:
        return ""

    def describe(self) -> list[dict]:
        return [{"file": path, "objects": sum(map(len, f.objects.values())) + len(f.unkeyed),
                 "failing": bool(f.problems)} for path, f in self._files.items()]

    def problems(self) -> list[LoadError]:
        """What fails now (files keeping their last good version), in path order."""
        out = [self._root_problem] if self._root_problem else []
        return out + [p for f in self._files.values() for p in f.problems]

    @property
    def failed(self) -> frozenset[str]:
        """Files (or the root path) that fail now and keep their last good version."""
        out = {path for path, f in self._files.items() if f.problems}
        if self._root_problem:
            out.add(self.path)
        return frozenset(out)

    def changes(self) -> Changes:
        """What changed since the last call (the first call: every object), per
        object; ``errors`` are this call's findings (see the module docstring)."""
        try:
            paths = self.files()
        except OSError as exc:  # the root itself: keep everything
            problem = LoadError(self.path, "", f"cannot read: {_oserror(exc)}")
            new = problem != self._root_problem
            self._root_problem = problem
            return Changes([], [], errors=[problem] if new else [])
        self._root_problem = None
        self.files_read = paths
        errors: list[LoadError] = []
        touched: set[ObjectKey] = set()
        unkeyed: list[KObject] = []
        fresh: dict[int, KObject] = {}  # id(kept object) → the whole object read now
        old_files, self._files = self._files, {}
        for path in paths:
            f = old_files.pop(path, None) or _File()
            self._files[path] = f
            if _reread(path, f, touched, unkeyed, fresh):
                errors.extend(f.problems)
        for f in old_files.values():  # files gone: their objects too
            touched.update(f.objects)
        upserts, deletes = self._resolve(touched, errors, fresh)
        return Changes(upserts + [fresh.get(id(o), o) for o in unkeyed], deletes, errors=errors)

    def _resolve(self, touched: set[ObjectKey], errors: list[LoadError], fresh: dict[int, KObject]
                 ) -> tuple[list[KObject], list[KObject]]:
        """The winner of each touched key (first in path order) against what was
        handed out: upserts and deletes; duplicates reported."""
        definers: dict[ObjectKey, list[KObject]] = {key: [] for key in touched}
        for f in self._files.values():  # path order
            for key, objs in f.objects.items():
                found = definers.get(key)
                if found is not None:
                    found.extend(objs)
        upserts, deletes = [], []
        for key in sorted(touched, key=key_order):
            found = definers[key]
            last = self._delivered.get(key)
            if not found:
                if last is not None:
                    deletes.append(last)
                    del self._delivered[key]
                continue
            winner = found[0]
            for other in found[1:]:
                errors.append(LoadError(other.file, str(key),
                                        f"ignored: duplicate of the one in {winner.where}",
                                        other.document, other.item))
            if winner is not last:
                whole = fresh.get(id(winner)) or _whole(winner)
                if whole is not None:  # None: its file changed meanwhile; the next call reads it
                    self._delivered[key] = winner
                    upserts.append(whole)
        return upserts, deletes

    # --- a snapshot ---------------------------------------------------------------

    def load(self) -> Loaded:
        loaded = Loaded()
        try:
            loaded.files = self.files()
        except OSError as exc:
            loaded.errors.append(LoadError(self.path, "", f"cannot read: {_oserror(exc)}"))
            loaded.failed = frozenset([self.path])
            return loaded
        failed = set()
        for path in loaded.files:
            data, problems = _read(path)
            parsed = False
            if data is not None:
                objects, problems, parsed, _ = _parse(path, data)
                loaded.objects.extend(objects)
            loaded.errors.extend(problems)
            if not parsed:
                failed.add(path)
        loaded.failed = frozenset(failed)
        return loaded


# --- one file ------------------------------------------------------------------


def _reread(path: str, f: _File, touched: set[ObjectKey], unkeyed: list[KObject],
            fresh: dict[int, KObject]) -> bool:
    """Bring ``f`` up to date with the file at ``path`` if it changed; add the
    keys it defined before or defines now to ``touched`` and its objects of
    kinds without a key to ``unkeyed``. True if it was read (its problems are
    then this call's findings).

    What is kept of each object is its identity only (``_light``): the whole
    objects read now go to ``fresh`` (by id of what is kept) for this call's
    upserts and are dropped after, so the source does not hold every raw
    document (at 100k routes, some 300 MB)."""
    try:
        st = os.stat(path)
        mark: tuple | None = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        mark = None  # gone between the listing and now: _read says why
    if mark is not None and mark == f.mark:
        return False
    f.mark = mark
    data, problems = _read(path)
    if data is not None:
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest == f.digest:  # the last good content again (touched, or fixed back)
            f.problems = []
            return True
        objects, problems, _, documents = _parse(path, data, f.documents)
    if problems:  # keep the last good version whole
        f.problems = problems
        return True
    f.digest, f.problems = digest, []
    kept: dict[int, KObject] = {}  # id(whole) → what is kept of it
    for number, (text, objs) in documents.items():
        known = f.documents.get(number)
        if known is None or known[1] is not objs:  # read now: keep only identities
            lights = []
            for obj in objs:
                light = kept[id(obj)] = _light(obj)
                fresh[id(light)] = obj
                lights.append(light)
            documents[number] = (text, lights)
    f.documents = documents
    objects = [kept.get(id(o), o) for o in objects]
    for obj in objects:
        if obj.document not in documents:  # parsed whole (a directive): kept whole
            fresh[id(obj)] = obj
    new: dict[ObjectKey, list[KObject]] = {}
    f.unkeyed = []
    for obj in objects:
        key = validation.identify(obj)
        if key is None:
            f.unkeyed.append(obj)
        else:
            new.setdefault(key, []).append(obj)
    unkeyed.extend(f.unkeyed)
    old = f.objects
    for key in old.keys() | new.keys():
        was, now = old.get(key), new.get(key)
        if was is None or now is None or _differ(was, now):
            touched.add(key)
        else:
            new[key] = was  # the same objects: keep the ones handed out (identity)
    f.objects = new
    return True


def _differ(a: list[KObject], b: list[KObject]) -> bool:
    """An object of an unchanged document is the very one kept from the last
    read; any other (a document changed, or moved) counts as changed."""
    return len(a) != len(b) or any(x is not y for x, y in zip(a, b))


def _light(obj: KObject) -> KObject:
    """What the source keeps of an object: enough to identify it (and delete it)."""
    meta = obj.raw["metadata"]
    ident = {"name": meta["name"]}
    if "namespace" in meta:
        ident["namespace"] = meta["namespace"]
    return KObject({"apiVersion": obj.raw["apiVersion"], "kind": obj.raw["kind"], "metadata": ident},
                   obj.file, obj.document, obj.item)


def _whole(light: KObject) -> KObject | None:
    """The whole object of a kept one, read again from its file (a duplicate's
    other copy that now wins); None if it is no longer where it was."""
    data, _ = _read(light.file)
    if data is None:
        return None
    try:
        objects, problems, parsed, _ = _parse(light.file, data)
    except Exception:  # pragma: no cover - _parse reports, never raises
        return None
    return next((o for o in objects if (o.document, o.item) == (light.document, light.item)
                 and validation.identify(o) == validation.identify(light)), None)


def _read(path: str) -> tuple[bytes | None, list[LoadError]]:
    try:
        with open(path, "rb") as fh:
            return fh.read(), []
    except OSError as exc:
        return None, [LoadError(path, "", f"cannot read: {_oserror(exc)}")]


# A document marker: "---" at the start of a line, then a blank or the end. The
# spec forbids it inside any scalar, so it always starts a document.
_MARKER = re.compile(rb"^---(?=[ \t\r\n]|$)", re.M)
_DIRECTIVE = re.compile(rb"^%", re.M)


_SAME = object()  # a document unchanged at its place: its objects are the last read's


def _documents(data: bytes, known: dict[int, tuple[bytes, list]] | None
               ) -> list[tuple[int, bytes | None, Any]]:
    """``yaml.load_all(data)`` as (document number, hash of its text, document),
    parsing only the documents not in ``known`` at their number (those are
    ``_SAME``).

    Documents are parsed alone, which the spec makes equivalent (anchors and
    tags do not cross documents). Whatever this cannot cut with certainty - a
    directive ("%YAML", "%TAG"), a piece that holds more or less than one
    document ("..." end markers), a YAML error (its line numbers must be the
    file's) - is parsed whole, as before, with no hash (read whole next time too)."""
    if known is None or _DIRECTIVE.search(data):
        return [(n, None, doc) for n, doc in enumerate(yaml.load_all(data, Loader=_Loader), start=1)]
    starts = [m.start() for m in _MARKER.finditer(data)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    out: list[tuple[int, bytes | None, Any]] = []
    for i, start in enumerate(starts):
        piece = data[start:starts[i + 1] if i + 1 < len(starts) else len(data)]
        digest = hashlib.blake2b(piece, digest_size=16).digest()
        number = len(out) + 1
        hit = known.get(number)
        if hit is not None and hit[0] == digest:
            out.append((number, digest, _SAME))
            continue
        try:
            docs = list(yaml.load_all(piece, Loader=_Loader))
        except yaml.YAMLError:
            docs = None
        if docs is None or len(docs) > 1 or (not docs and i > 0):
            return _documents(data, None)  # raises the file's own error, if any
        if docs:
            out.append((number, digest, docs[0]))
    return out


def _parse(path: str, data: bytes, known: dict[int, tuple[bytes, list[KObject]]] | None = None
           ) -> tuple[list[KObject], list[LoadError], bool, dict[int, tuple[bytes, list[KObject]]]]:
    """The objects of one file's content, the documents that could not be
    identified, whether the file parsed at all (False: a YAML error), and its
    documents by number with their objects (those ``known`` and unchanged are
    the known objects, by identity; see ``_documents``)."""
    try:
        entries = _documents(data, known)
    except yaml.YAMLError as exc:
        return [], [LoadError(path, "", f"YAML parse error {_yaml_reason(exc)}")], False, {}
    except UnicodeDecodeError as exc:
        return [], [LoadError(path, "", f"not valid UTF-8: {exc.reason}")], False, {}
    objects: list[KObject] = []
    problems: list[LoadError] = []
    documents: dict[int, tuple[bytes, list[KObject]]] = {}

    for number, digest, doc in entries:
        if doc is _SAME:
            assert known is not None
            documents[number] = known[number]
            objects.extend(known[number][1])
            continue
        mine: list[KObject] = []

        def add(doc: Any, item: int) -> None:
            problem = _identity_problem(doc)
            if problem:
                problems.append(LoadError(path, "", problem, number, item))
            else:
                mine.append(KObject(doc, path, number, item))

        if doc is None:  # an empty document, e.g. after a trailing "---"
            pass
        elif isinstance(doc, dict) and doc.get("kind") == "List" and "items" in doc:
            items = doc["items"] or []
            if not isinstance(items, list):
                problems.append(LoadError(path, "", "List items must be a list", number))
            else:
                for index, item in enumerate(items, start=1):
                    add(item, index)
        else:
            add(doc, 0)
        objects.extend(mine)
        if digest is not None:
            documents[number] = (digest, mine)
    return objects, problems, True, documents


def _identity_problem(doc: Any) -> str:
    """Why ``doc`` cannot be identified as a Kubernetes object ("" if it can)."""
    if not isinstance(doc, dict):
        return f"expected a mapping (a Kubernetes object), got {_type_name(doc)}"
    for key in ("apiVersion", "kind"):
        value = doc.get(key)
        if value is None:
            return f"{key}: required field is missing"
        if not isinstance(value, str) or not value:
            return f"{key}: expected a non-empty string, got {_type_name(value)}"
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        if meta is None:
            return "metadata.name: required field is missing"
        return f"metadata: expected a mapping, got {_type_name(meta)}"
    name = meta.get("name")
    if name is None:
        return "metadata.name: required field is missing"
    if not isinstance(name, str) or not name:
        return f"metadata.name: expected a non-empty string, got {_type_name(name)}"
    ns = meta.get("namespace")
    if ns is not None and not isinstance(ns, str):
        return f"metadata.namespace: expected a string, got {_type_name(ns)}"
    return ""


# --- wording ---------------------------------------------------------------------


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f": {problem}"
    text = f"at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        text += f" ({context} started at line {context_mark.line + 1})"
    return text


def _oserror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
