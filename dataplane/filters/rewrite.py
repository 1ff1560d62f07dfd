"""URLRewrite (Gateway API HTTPURLRewriteFilter): the Host and path the upstream gets.

``hostname`` replaces the Host sent upstream. ``ReplaceFullPath`` replaces the
path, ``ReplacePrefixMatch`` the route's matched prefix (``/foo/bar`` with
prefix ``/foo`` and ``/xyz`` is ``/xyz/bar``); the query is kept as sent.
"""

from __future__ import annotations

from dataplane.filters.base import Filter
from dataplane.headers import replace_prefix
from shm import schema


class URLRewrite(Filter):
    SPEC = schema.URLRewrite
    REQUEST = True
    __slots__ = ("hostname", "path_type", "path")

    def __init__(self, spec: schema.URLRewrite, resolve=None) -> None:
        self.hostname = spec.hostname.encode() or None
        self.path_type = spec.path_type
        self.path = spec.path.encode()

    def request(self, req) -> None:
        if self.hostname is not None:
            req.host_out = self.hostname
        if self.path_type:
            new = self.path
            if self.path_type == "ReplacePrefixMatch":
                new = replace_prefix(req.path, req.prefix, new)
            target = req.target
            q = target.find(b"?")
            req.target = new if q < 0 else new + target[q:]
        return None
