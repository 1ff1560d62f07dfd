"""RequestHeaderModifier and ResponseHeaderModifier (Gateway API), on a rule or a backendRef.

Rules (Gateway API HTTPHeaderFilter):
* ``set`` replaces every value of a header: its name is dropped, then one
  line is added; ``add`` appends a value and keeps the others; ``remove``
  drops the header. Names compare case-insensitively.
* Host is one header framed by the proxy: ``set`` of Host changes the Host
  sent upstream (``req.host_out``); ``add``/``remove`` of Host cannot apply.
* So is ``x-request-id`` (dataplane/requestid.py): ``set`` on a request makes
  its value the request's id (sent upstream, returned, logged: one line each,
  never two); ``add``/``remove`` of it, and any edit of it on a response,
  cannot apply (the response always carries the request's id).
* On a backendRef the edits apply only when that backend is chosen, after
  the rule's own (the chain runs the backend's filters after the rule's).
"""

from __future__ import annotations

from dataplane import requestid
from dataplane.filters.base import Filter
from dataplane.headers import drop_from_block, drop_lines
from shm import schema

_FRAMED = ("host", "x-request-id")  # lines the proxy writes itself


class HeaderEdit:
    """A header modifier made ready to apply: names to drop, lines to append."""

    __slots__ = ("drop", "lines", "host", "rid")

    def __init__(self, mod) -> None:
        # "set" replaces every value: drop the name, then add the one line.
        self.drop = frozenset(h.name.lower().encode() for h in mod.set) | frozenset(
            n.encode() for n in mod.remove)
        sets = [h for h in mod.set if h.name.lower() not in _FRAMED]
        adds = [h for h in mod.add if h.name.lower() not in _FRAMED]
        self.lines = b"".join(b"%s: %s\r\n" % (h.name.encode(), h.value.encode()) for h in sets + adds)
        host = [h.value for h in mod.set if h.name.lower() == "host"]
        self.host = host[0].encode() if host else None
        rid = [h.value.encode() for h in mod.set if h.name.lower() == "x-request-id"]
        self.rid = rid[0] if rid and requestid.valid(rid[0]) else None


class RequestHeaderModifier(Filter):
    SPEC = schema.RequestHeaderModifier
    REQUEST = True
    __slots__ = ("edit",)

    def __init__(self, spec: schema.RequestHeaderModifier, resolve=None) -> None:
        self.edit = HeaderEdit(spec)

    def request(self, req) -> None:
        edit = self.edit
        forward = drop_lines(req.forward, edit.drop)
        if edit.lines:
            forward.append(edit.lines)
        req.forward = forward
        if edit.host is not None:
            req.host_out = edit.host
        if edit.rid is not None:
            req.request_id, req.rid_new = edit.rid, False
        return None


class ResponseHeaderModifier(Filter):
    SPEC = schema.ResponseHeaderModifier
    RESPONSE = True
    __slots__ = ("edit",)

    def __init__(self, spec: schema.ResponseHeaderModifier, resolve=None) -> None:
        self.edit = HeaderEdit(spec)

    def response(self, req, block: bytes) -> bytes:
        return drop_from_block(block, self.edit.drop) + self.edit.lines
