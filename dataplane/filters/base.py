"""The filter interface: what every filter kind of a route's chain implements.

A filter is built once per table generation, from its schema struct
(``shm.schema``), when the router first decodes the virtual host that uses
it; it holds only what the struct says, precomputed (names lower-cased,
header lines pre-framed, patterns compiled). Per request only its two phases
run, and they keep no per-request state of their own: what a later phase
needs is on the ``Request``.

* ``request(req)`` edits the request (``req.forward`` lines, ``req.target``,
  ``req.host_out``, ``req.mirrors``) or answers it: a filter that returns
  bytes (a complete response: a redirect, a CORS preflight, later a 401 or a
  429) ends the chain, and the gateway sends that instead of proxying.
* ``response(req, block)`` edits the response header block on its way back
  (``"\\r\\nName: value\\r\\n..."``, hop-by-hop lines already removed) and
  returns it.
* ``needs_body`` says the filter must see the request body before the
  request is proxied (body mutation, auth over a form post); the chain then
  says so too. No filter of today needs it.

A kind declares which phases it has (``REQUEST``, ``RESPONSE``), so the chain
calls only those, and which schema struct it is built from (``SPEC``).
Adding a kind: a schema struct, its compile function, a class here in
``dataplane/filters/`` listed in ``chain.ORDER``, and its tests.
"""

from __future__ import annotations


class Filter:
    SPEC: type = type(None)  # the shm.schema struct this kind is built from
    REQUEST = False  # has a request phase
    RESPONSE = False  # has a response phase
    needs_body = False

    def request(self, req) -> bytes | None:
        return None

    def response(self, req, block: bytes) -> bytes:
        return block
