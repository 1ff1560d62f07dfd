"""Header templates (FluxGateRoute requestHeaders with %{...}), compiled once per generation.

A template is a tuple of parts; rendering is one pass over them with values
the request already has (the client address, its headers, its path). Values
come from a parsed request, so they hold no CR or LF. A header whose value
renders empty is not sent (an absent source header sends nothing rather
than an empty header).

%{request_id} is the request's id (dataplane/requestid.py: the client's
X-Request-Id when valid, else a new one), the one sent upstream as
X-Request-Id too, so the backend's X-Request-Id and the templated header agree.
"""

from __future__ import annotations


from dataplane.filters.base import Filter
from dataplane.headers import drop_lines, header_value
from shm import schema
from shm.schema import RequestHeaderTemplate



class HeaderTemplates:
    __slots__ = ("items", "drop")

    def __init__(self, f: RequestHeaderTemplate) -> None:
        self.items = tuple(
            (h.name.encode(), tuple((p.kind, p.value.encode() if p.kind != "path_segment" else int(p.value))
                                    for p in h.parts))
            for h in f.set
        )
        self.drop = frozenset(name.lower() for name, _ in self.items)

    def render(self, client: bytes, path: bytes, headers: list[tuple[bytes, bytes]],
               request_id: bytes = b"") -> bytes:
        """The header lines to add (the names in ``drop`` are removed first)."""
        out = []
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
        forward.append(templates.render(req.client, req.path, req.headers, req.request_id))
        req.forward = forward
        return None
