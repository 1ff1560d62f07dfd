"""RequestMirror (Gateway API HTTPRequestMirrorFilter): which mirrors get a copy.

The filter only chooses: a mirror whose cluster resolved is picked for this
request with its ``percent`` chance, and recorded in ``req.mirrors``. The
copies themselves are sent once the upstream head is final (after every
request filter and the backend's), by ``dataplane/upstream/mirror.py``: a
mirror sees exactly what the real upstream sees.
"""

from __future__ import annotations

import random

from dataplane.filters.base import Filter
from shm import schema


class RequestMirror(Filter):
    SPEC = schema.RequestMirror
    REQUEST = True
    __slots__ = ("cluster", "percent")

    def __init__(self, spec: schema.RequestMirror, resolve) -> None:
        self.cluster = resolve(spec.cluster)  # None: unresolved, never mirrored
        self.percent = spec.percent

    def request(self, req) -> None:
        if self.cluster is not None and (self.percent >= 100.0 or random.random() * 100.0 < self.percent):
            req.mirrors = req.mirrors + (self.cluster,)
        return None
