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
and call ``load()`` only when it changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Hashable

import yaml

from control.objects.raw import KObject, LoadError, location

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


class FileSource:
    """Reads Kubernetes objects from ``path`` (a file or a directory)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

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
            if not _load_file(path, loaded):
                failed.add(path)
        loaded.failed = frozenset(failed)
        return loaded


# --- one file ------------------------------------------------------------------


def _load_file(path: str, loaded: Loaded) -> bool:
    """Append the objects of ``path`` to ``loaded``; False if it did not parse."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        documents = list(yaml.load_all(data, Loader=_Loader))
    except OSError as exc:
        loaded.errors.append(LoadError(path, "", f"cannot read: {_oserror(exc)}"))
        return False
    except yaml.YAMLError as exc:
        loaded.errors.append(LoadError(path, "", f"YAML parse error {_yaml_reason(exc)}"))
        return False
    except UnicodeDecodeError as exc:
        loaded.errors.append(LoadError(path, "", f"not valid UTF-8: {exc.reason}"))
        return False
    for number, doc in enumerate(documents, start=1):
        if doc is None:  # an empty document, e.g. after a trailing "---"
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and "items" in doc:
            items = doc["items"] or []
            if not isinstance(items, list):
                loaded.errors.append(LoadError(path, "", "List items must be a list", number))
                continue
            for index, item in enumerate(items, start=1):
                _add(item, path, number, index, loaded)
            continue
        _add(doc, path, number, 0, loaded)
    return True


def _add(doc: Any, path: str, document: int, item: int, loaded: Loaded) -> None:
    problem = _identity_problem(doc)
    if problem:
        loaded.errors.append(LoadError(path, "", problem, document, item))
        return
    loaded.objects.append(KObject(doc, path, document, item))


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
