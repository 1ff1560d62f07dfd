"""``fluxgate validate PATH``: check a configuration the way ``fluxgate run`` would read it.

Made for users' CI pipelines. It runs the file-mode pipeline up to status and
no further (FileSource changes → ObjectCache → translate), so it needs no cluster,
starts no worker and never touches shared memory.

What fails a configuration (exit code 1), and nothing else:

* a load error: a file or directory that cannot be read, a file that is not
  valid YAML, a document that is not a Kubernetes object, an object that is
  invalid (rejected) or defined twice (the later copy is ignored);
* an object of FluxGate's group (``fluxgate.io``) or Gateway API's whose
  kind (or version) FluxGate does not serve, such as a FluxGatePolicy:
  ``fluxgate run`` would only warn and not enforce it;
* a directory that holds no YAML file (``*.yaml``, ``*.yml``);
* a failing condition anywhere in the status: on an object, on one of a
  Gateway's listeners, or on one of a route's parents. A condition fails when
  its status is not the healthy one, which is ``True`` for every type
  (``Accepted``, ``Programmed``, ``ResolvedRefs``, ...) except ``Conflicted``
  and ``PartiallyInvalid``, where it is ``False``.

Warnings (an unsupported kind, ignored) and notes (an object FluxGate skips on
purpose, such as a Gateway of another class) are shown but never fail. A PATH
that does not exist is a usage error (exit code 2), like a bad flag.

Text output is stable for diffing and grepping: load errors and warnings first
in path order, then one line per condition, objects in report order (kinds
GatewayClass, Gateway, HTTPRoute, then the others; then namespace and name),
each object's own conditions before its listeners (by name) and parents (by
reference), condition types sorted; then notes, sorted; then one summary line.
Each line starts with its tag: ``error``, ``warning``, ``fail``, ``ok``, ``note``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from typing import Any, Iterator, TextIO

import msgspec

from control.cache import ObjectCache, is_unserved
from control.objects.raw import LoadError
from control.sources.files import FileSource
# is_failing is part of this module's interface too (what fails a configuration).
from control.status import Condition, ObjectStatus, StatusReport, is_failing
from control.translate import translate

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
OUTPUTS = ("text", "json")
_TAG_WIDTH = len("warning")

HELP = """\
Exit codes:
  0  valid: nothing below
  1  invalid: a file that cannot be read or parsed, a document that is not a
     Kubernetes object, an invalid or duplicate object, an object of the
     fluxgate.io or Gateway API groups whose kind FluxGate does not serve
     (it would not be enforced), a directory without
     YAML files, or a failing condition on an object, a listener or a route
     parent. A condition fails when its status is not the healthy one: True
     for every type except Conflicted and PartiallyInvalid, where it is False.
  2  usage error (PATH does not exist, a bad option)
Warnings (unsupported kinds) and notes (objects skipped on purpose) never fail.
"""


class UsageError(Exception):
    """The command was called wrongly (exit code 2)."""


@dataclass(frozen=True)
class Line:
    """One condition of one object, listener or parent."""

    scope: str  # "Gateway default/gw", "... listener http", "... parent Gateway default/gw"
    condition: Condition

    @property
    def failing(self) -> bool:
        return is_failing(self.condition)

    def __str__(self) -> str:
        c = self.condition
        text = f"{self.scope}: {c.type}={c.status}"
        # A healthy condition whose reason only restates its type says nothing more.
        if self.failing or c.reason != c.type or c.message:
            text += f" ({c.reason}: {c.message})" if c.message else f" ({c.reason})"
        return text


@dataclass(frozen=True)
class Validation:
    """Everything ``validate`` found, and the exit code it makes."""

    path: str
    files: tuple[str, ...]
    failed: frozenset[str]  # files (or PATH itself) that could not be read or parsed
    errors: tuple[LoadError, ...]
    warnings: tuple[LoadError, ...]
    status: StatusReport
    sources: dict[tuple[str, str, str], str]  # every loaded object's key → where it is

    def condition_lines(self) -> Iterator[Line]:
        for obj in self.status:  # report order
            yield from _lines(obj)

    @property
    def exit_code(self) -> int:
        if self.errors or any(line.failing for line in self.condition_lines()):
            return EXIT_INVALID
        return EXIT_OK

    def text(self, quiet: bool = False) -> list[str]:
        """The text output; ``quiet`` keeps only the lines that make exit code 1."""
        out = [_tagged("error", str(e)) for e in self.errors]
        if not quiet:
            out += [_tagged("warning", str(w)) for w in self.warnings]
        lines = list(self.condition_lines())
        out += [_tagged("fail" if line.failing else "ok", str(line))
                for line in lines if line.failing or not quiet]
        if quiet:
            return out
        out += [_tagged("note", n) for n in sorted(self.status.notes)]
        failing = sum(line.failing for line in lines)
        verdict = "invalid" if self.exit_code else "valid"
        out.append(
            f"{verdict}: {_count(len(self.errors), 'error')}, "
            f"{_count(failing, 'failing condition')}, {_count(len(self.warnings), 'warning')}, "
            f"{_count(len(self.status.notes), 'note')}; "
            f"{_count(len(self.files), 'file')}, {_count(len(self.sources), 'object')}"
        )
        return out

    def to_builtins(self) -> dict[str, Any]:
        """The JSON output: one document, camelCase keys like the status it embeds."""
        objects = []
        for obj in self.status:
            data = msgspec.to_builtins(obj)
            data["source"] = self.sources.get((obj.kind, obj.namespace, obj.name), "")
            data["failing"] = [str(line) for line in _lines(obj) if line.failing]
            objects.append(data)
        return {
            "path": self.path,
            "valid": self.exit_code == EXIT_OK,
            "exitCode": self.exit_code,
            "files": [{"path": f, "parsed": f not in self.failed} for f in self.files],
            "errors": [_load_error(e) for e in self.errors],
            "warnings": [_load_error(w) for w in self.warnings],
            "loaded": [{"object": _label(key), "source": where}
                       for key, where in sorted(self.sources.items())],
            "objects": objects,
            "notes": sorted(self.status.notes),
        }


def validate(path: str | os.PathLike[str]) -> Validation:
    """Load, check and translate the configuration at ``path`` (a file or a directory).

    Raises ``UsageError`` if ``path`` does not exist. Pure apart from reading
    the files: nothing is started, published or written.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    # What `fluxgate run` reads, read the same way (control/pipeline.py): the
    # file source's changes into the cache.
    source = FileSource(path)
    changes = source.changes()
    cache = ObjectCache()
    cache.apply_changes(changes.upserts, changes.deletes)
    # An object of FluxGate's or Gateway API's groups that FluxGate does not
    # serve would be silently not enforced by `fluxgate run` (a warning there):
    # here it fails the configuration.
    errors = tuple(changes.errors) + cache.errors + tuple(
        replace(w, level="error") for w in cache.warnings if is_unserved(w))
    errors = tuple(sorted(errors, key=lambda e: (e.file, e.document, e.item)))  # path order
    warnings = tuple(w for w in cache.warnings if not is_unserved(w))
    if not source.files_read and not source.failed:
        # Most likely the wrong directory: an empty config must not pass CI silently.
        errors += (LoadError(path, "", "no YAML files (*.yaml, *.yml) found"),)
    objects = cache.objects()
    sources = {}
    for obj in objects:
        entry = cache.entry(obj.key)
        sources[tuple(obj.key)] = entry.where if entry else ""
    return Validation(
        path=path,
        files=tuple(source.files_read),
        failed=source.failed,
        errors=errors,
        warnings=warnings,
        status=translate(objects, default_class="fluxgate").status,
        sources=sources,
    )


def run(path: str, output: str = "text", quiet: bool = False,
        out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The command: print the findings of ``validate(path)``; return the exit code.

    ``quiet`` applies to text output; the JSON document is always complete.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if output not in OUTPUTS:
        print(f"fluxgate validate: --output must be one of {', '.join(OUTPUTS)}", file=err)
        return EXIT_USAGE
    try:
        result = validate(path)
    except UsageError as exc:
        print(f"fluxgate validate: {exc}", file=err)
        return EXIT_USAGE
    try:
        if output == "json":
            json.dump(result.to_builtins(), out, indent=2)
            out.write("\n")
        else:
            for line in result.text(quiet):
                out.write(line + "\n")
        out.flush()
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error of the configuration.
        # Point stdout at /dev/null so the interpreter's final flush is silent too.
        _silence(out)
    return result.exit_code


def _silence(out: TextIO) -> None:
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's StringIO): nothing will flush it again
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _lines(obj: ObjectStatus) -> Iterator[Line]:
    """One object's conditions in output order: its own, listeners', parents'."""
    for cond in sorted(obj.conditions, key=_by_type):
        yield Line(obj.label, cond)
    for lst in sorted(obj.listeners, key=lambda x: x.name):
        for cond in sorted(lst.conditions, key=_by_type):
            yield Line(f"{obj.label} listener {lst.name}", cond)
    for parent in sorted(obj.parents, key=lambda p: str(p.parent_ref)):
        for cond in sorted(parent.conditions, key=_by_type):
            yield Line(f"{obj.label} parent {parent.parent_ref}", cond)


# --- wording ---------------------------------------------------------------------


def _by_type(c: Condition) -> str:
    return c.type


def _tagged(tag: str, text: str) -> str:
    return f"{tag:<{_TAG_WIDTH}} {text}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _label(key: tuple[str, str, str]) -> str:
    kind, namespace, name = key
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _load_error(e: LoadError) -> dict[str, Any]:
    return {"file": e.file, "document": e.document, "item": e.item, "object": e.object,
            "reason": e.reason, "message": str(e)}
