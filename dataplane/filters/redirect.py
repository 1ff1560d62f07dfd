"""RequestRedirect (Gateway API HTTPRequestRedirectFilter): answered by the gateway.

Location is built as the spec says: the scheme and hostname given, else the
request's (its Host without the port); the port given, else the new scheme's
well-known one, else the listener's, and left out when it is the scheme's
well-known port; the path replaced whole (ReplaceFullPath) or its matched
prefix (ReplacePrefixMatch), else kept; the query kept.
"""

from __future__ import annotations

from dataplane import responses
from dataplane.filters.base import Filter
from dataplane.headers import replace_prefix
from shm import schema


class RequestRedirect(Filter):
    SPEC = schema.RequestRedirect
    REQUEST = True
    __slots__ = ("status", "scheme", "hostname", "port", "path_type", "path", "_well_known")

    def __init__(self, spec: schema.RequestRedirect, resolve=None) -> None:
        self.status = spec.status
        self.scheme = spec.scheme.encode()
        self.hostname = spec.hostname.encode()
        self.path_type = spec.path_type
        self.path = spec.path.encode()
        # No port given: the new scheme's well-known one (0: the listener's).
        self.port = spec.port or ((443 if spec.scheme == "https" else 80) if spec.scheme else 0)

    def request(self, req) -> bytes:
        scheme = self.scheme or req.scheme
        if self.hostname:
            hostname = self.hostname
        else:
            hostname = req.host.lower()
            c = hostname.rfind(b":")
            if c >= 0 and hostname[-1:] != b"]":
                hostname = hostname[:c]
        port = self.port or req.port
        well_known = (scheme == b"http" and port == 80) or (scheme == b"https" and port == 443)
        authority = hostname if well_known else b"%s:%d" % (hostname, port)
        path = req.path
        if self.path_type == "ReplaceFullPath":
            path = self.path
        elif self.path_type == "ReplacePrefixMatch":
            path = replace_prefix(path, req.prefix, self.path)
        query = req.query
        location = b"%s://%s%s%s" % (scheme, authority, path, b"?" + query if query else b"")
        return responses.redirect(self.status, location, not req.keep_local)
