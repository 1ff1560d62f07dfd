"""Secrets: which ones the source's objects reference, and which it hands out.

The source watches Secrets of one type only (``type=kubernetes.io/tls``: what
listeners and Ingress TLS can use), and of those most are no business of the
gateway's. Rules (what must stay true):

* A Secret matters only while a Gateway listener's ``tls.certificateRefs``
  (core group, kind Secret, the Gateway's namespace unless the ref names one)
  or an Ingress's ``spec.tls[].secretName`` (the Ingress's namespace) names
  it. An event of any other Secret is taken in silently: it bumps no
  fingerprint, so it causes no rebuild.
* The references are counted per (namespace, name) over every Gateway and
  Ingress the source holds (``track`` replaces one object's references with
  its new ones), so a Secret named by two objects stays referenced until
  neither names it.
* Secrets reach ``load()`` and ``changes()`` only when they are referenced
  *and* the typed cache reads Secrets (``cache_reads_secrets``:
  ``validation.KINDS``; TLS termination is not there yet), so an unsupported
  kind is never handed to the cache.
* ``changes`` hands out a Secret when it became referenced, or changed while
  referenced, and a delete when it stopped being referenced or is gone; it
  compares with what it handed out last (``_delivered``), so applying every
  ``changes()`` in turn leaves the cache as ``load()`` would.

Every method runs under the store's lock (store.py); this class has none.
"""

from __future__ import annotations

from collections import Counter
from typing import Container, Iterable

from control.objects import validation
from control.sources.kubernetes.fields import as_list, dig

TLS_SECRET_TYPE = "kubernetes.io/tls"

Ref = tuple[str, str]  # (namespace, name) of a Secret


def secret_refs(kind: str, raw: dict) -> frozenset[Ref]:
    """The (namespace, name) of the Secrets a Gateway or an Ingress references."""
    ns = dig(raw, "metadata", "namespace") or validation.DEFAULT_NAMESPACE
    found: set[Ref] = set()
    if kind == "Gateway":
        for listener in as_list(dig(raw, "spec", "listeners")):
            for ref in as_list(dig(listener, "tls", "certificateRefs")):
                if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
                    continue
                if (ref.get("group") or "") == "" and (ref.get("kind") or "Secret") == "Secret":
                    found.add((ref.get("namespace") or ns, ref["name"]))
    elif kind == "Ingress":
        for tls in as_list(dig(raw, "spec", "tls")):
            name = dig(tls, "secretName")
            if isinstance(name, str) and name:
                found.add((ns, name))
    return frozenset(found)


def cache_reads_secrets() -> bool:
    """The typed cache parses Secrets (else none is handed to it)."""
    return ("v1", "Secret") in validation.KINDS


class SecretRefs:
    """The Secrets referenced now, and those ``changes`` handed out."""

    def __init__(self) -> None:
        self._refs: dict[tuple[str, str, str], frozenset[Ref]] = {}  # per Gateway/Ingress
        self._counts: Counter[Ref] = Counter()
        self._delivered: dict[Ref, dict] = {}  # Secrets changes() handed out

    def referenced(self, key: Ref) -> bool:
        return key in self._counts

    def keys(self) -> set[Ref]:
        """A copy of the referenced (namespace, name)s."""
        return set(self._counts)

    def track(self, kind: str, key: tuple[str, str], raw: dict | None) -> None:
        """A Gateway or Ingress changed (``raw``) or was deleted (None)."""
        full = (kind, *key)
        old = self._refs.pop(full, frozenset())
        new = secret_refs(kind, raw) if raw is not None else frozenset()
        if new:
            self._refs[full] = new
        self._counts.update(new)
        self._counts.subtract(old)
        for ref in old - new:
            if self._counts[ref] <= 0:
                del self._counts[ref]

    def changes(self, held: Iterable[dict[Ref, dict]], dirty: Container[tuple[str, str, str]]
                ) -> tuple[dict[tuple[str, str, str], dict], dict[tuple[str, str, str], dict]]:
        """(upserts, deletes) of Secrets by (kind, namespace, name) since the last
        call. ``held``: the Secret watches' objects; ``dirty``: the (kind,
        namespace, name)s changed since the last call (a Secret among them that
        is still handed out is handed out again)."""
        # A Secret is in load() while it exists and is referenced: compare with
        # what was handed out, for the dirty ones and every reference.
        now: dict[Ref, dict] = {}
        for objects in held:
            for key in self._counts:
                raw = objects.get(key)
                if raw is not None:
                    now[key] = raw
        upserts: dict[tuple[str, str, str], dict] = {}
        deletes: dict[tuple[str, str, str], dict] = {}
        for key, raw in now.items():
            if self._delivered.get(key) is not raw or ("Secret", *key) in dirty:
                upserts[("Secret", *key)] = raw
        for key, raw in self._delivered.items():
            if key not in now:
                deletes[("Secret", *key)] = raw
        self._delivered = now
        return upserts, deletes
