"""The one change type every source emits.

A source tells the pipeline what changed since its last report as a
``Changes``: objects to (re)read and objects gone. The Kubernetes source builds
it from watch events, the file source from the files that changed; the
pipeline applies either to the cache the same way (``ObjectCache.apply_changes``),
so translation reuses every object that did not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from control.objects.raw import KObject, LoadError


@dataclass(frozen=True)
class Changes:
    """Objects to (re)read and objects gone (identified by kind, namespace, name).

    ``upserts`` hold at most one object per key, so applying them in any order
    gives the same cache. ``errors``: what the source found wrong while reading
    (a file that does not parse; it keeps its last good version), reported
    once, when found.
    """

    upserts: list[KObject]
    deletes: list[KObject]
    errors: list[LoadError] = field(default_factory=list)
