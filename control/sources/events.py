"""The one change type every source emits.

A source tells the pipeline what changed since its last report as a
``Changes``: objects to (re)read and objects gone. The Kubernetes source builds
it from watch events, the file source from the files that changed; the
pipeline applies either to the cache the same way (``ObjectCache.apply_changes``),
so translation reuses every object that did not change.
"""

from __future__ import annotations

from dataclasses import dataclass

from control.objects.raw import KObject


@dataclass(frozen=True)
class Changes:
    """Objects to (re)read and objects gone (identified by kind, namespace, name)."""

    upserts: list[KObject]
    deletes: list[KObject]
