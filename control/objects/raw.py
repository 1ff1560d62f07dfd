"""The raw object: a Kubernetes object as a source read it, and what was wrong with one.

Both sources (files, the Kubernetes API) hand the cache ``KObject``s; a
problem with the input (a file that does not parse, a document that is not an
object, an object that is rejected) is a ``LoadError`` that says where it
was, so every source's problems read alike in logs and ``fluxgate validate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KObject:
    """One Kubernetes object as read, with where it came from."""

    raw: dict[str, Any]
    file: str
    document: int  # 1-based position of the YAML document in its file
    item: int = 0  # 1-based position in a ``kind: List`` document, else 0

    @property
    def api_version(self) -> str:
        return self.raw["apiVersion"]

    @property
    def kind(self) -> str:
        return self.raw["kind"]

    @property
    def name(self) -> str:
        return self.raw["metadata"]["name"]

    @property
    def namespace(self) -> str:
        """As written; "" when absent (the cache applies the default)."""
        ns = self.raw["metadata"].get("namespace")
        return ns if isinstance(ns, str) else ""

    @property
    def where(self) -> str:
        return location(self.file, self.document, self.item)


@dataclass(frozen=True)
class LoadError:
    """Something wrong with the input, reported in one log line.

    ``object`` names the object ("HTTPRoute default/web") when it could be
    identified, else it is "". ``level`` is "error" (the object or file was
    rejected) or "warning" (it was ignored on purpose, e.g. an unknown kind).
    """

    file: str
    object: str
    reason: str
    document: int = 0  # 0 = the whole file
    item: int = 0
    level: str = "error"

    def __str__(self) -> str:
        where = location(self.file, self.document, self.item)
        if self.object:
            return f"{where} {self.object}: {self.reason}"
        return f"{where}: {self.reason}"


def location(file: str, document: int = 0, item: int = 0) -> str:
    """"file", "file (document 2)" or "file (document 2, item 3)"."""
    if not document:
        return file
    if item:
        return f"{file} (document {document}, item {item})"
    return f"{file} (document {document})"
