"""Header templates (FluxGateRoute requestHeaders with %{...}), compiled once per generation.

A template is a tuple of parts; rendering is one pass over them with values
the request already has (the client address, its headers, its path). Values
come from a parsed request, so they hold no CR or LF. A header whose value
renders empty is not sent (an absent source header sends nothing rather
than an empty header).

%{request_id} is the request's X-Request-Id; when the client sent none, one
is made and sent upstream too, so the backend's X-Request-Id and the
templated header agree.
"""

from __future__ import annotations

import os

from dataplane.filters.base import Filter
from dataplane.headers import drop_lines, header_value
from shm import schema
from shm.schema import RequestHeaderTemplate

_REQUEST_ID = b"x-request-id"


class HeaderTemplates:
    __slots__ = ("items", "drop", "needs_id")

    def __init__(self, f: RequestHeaderTemplate) -> None:
        self.items = tuple(
            (h.name.encode(), tuple((p.kind, p.value.encode() if p.kind != "path_segment" else int(p.value))
                                    for p in h.parts))
            for h in f.set
        )
        self.drop = frozenset(name.lower() for name, _ in self.items)
        self.needs_id = any(kind == "request_id" for _, parts in self.items for kind, _ in parts)

    def render(self, client: bytes, path: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The header lines to add (the names in ``drop`` are removed first)."""
        request_id = b""
        out = []
        if self.needs_id:
            request_id = header_value(headers, _REQUEST_ID)
            if not request_id:
                request_id = os.urandom(16).hex().encode()
                if _REQUEST_ID not in self.drop:
                    out.append(b"x-request-id: %s\r\n" % request_id)
        segments = None
        for name, parts in self.items:
            value = []
            for kind, arg in parts:
                if kind == "text":
                    value.append(arg)
                elif kind == "client_ip":
                    value.append(client)
                elif kind == "header":
                    value.append(header_value(headers, arg))
                elif kind == "request_id":
                    value.append(request_id)
                elif kind == "path_segment":
                    if segments is None:
                        segments = path.split(b"/")
                    value.append(segments[arg] if arg < len(segments) else b"")
            rendered = b"".join(value).strip()
            if rendered:
                out.append(b"%s: %s\r\n" % (name, rendered))
        return b"".join(out)


class RequestHeaderTemplateFilter(Filter):
    """FluxGateRoute requestHeaders with placeholders: set after the RequestHeaderModifier."""

    SPEC = schema.RequestHeaderTemplate
    REQUEST = True
    __slots__ = ("templates",)

    def __init__(self, spec: RequestHeaderTemplate, resolve=None) -> None:
        self.templates = HeaderTemplates(spec)

    def request(self, req) -> None:
        templates = self.templates
        forward = drop_lines(req.forward, templates.drop)
        forward.append(templates.render(req.client, req.path, req.headers))
        req.forward = forward
        return None
