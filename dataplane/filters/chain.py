"""The filter chain of a route: every filter kind, in one fixed order.

ORDER (whatever order a route writes its filters in):

  request phase, first to last          response phase, first to last
  1. RequestHeaderModifier              1. CORS (its headers, or none)
  2. RequestHeaderTemplate              2. ResponseHeaderModifier
  3. CORS (answers a preflight)
  4. RequestRedirect (answers)
  5. URLRewrite
  6. RequestMirror (chooses copies)

A filter that answers (a redirect, a preflight) ends the request phase: the
later ones do not run and nothing is proxied. A backendRef's own filters
(header modifiers) form a second chain that runs after the rule's, once that
backend is chosen; on the way back, the rule's response filters run first,
then the backend's. Later kinds take their place by what they do: what
refuses a request (IP access, authentication, rate limits) after CORS, so a
preflight never needs credentials, and before the redirect; body mutation
after the rewrite.

Theory of operation: ``build`` is called by the router once per table
generation for each action (and each backend with filters); it makes one
filter object per schema struct, sorts them by ORDER and keeps the request
and response phases as tuples. A chain of nothing is None: the hot path of a
route without filters is one ``is None`` test.
"""

from __future__ import annotations

from typing import Callable, Iterable

from dataplane.filters.base import Filter
from dataplane.filters.cors import CorsFilter
from dataplane.filters.headers import RequestHeaderModifier, ResponseHeaderModifier
from dataplane.filters.mirror import RequestMirror
from dataplane.filters.redirect import RequestRedirect
from dataplane.filters.rewrite import URLRewrite
from dataplane.filters.template import RequestHeaderTemplateFilter

ORDER: tuple[type[Filter], ...] = (
    RequestHeaderModifier,
    RequestHeaderTemplateFilter,
    CorsFilter,
    RequestRedirect,
    URLRewrite,
    RequestMirror,
    ResponseHeaderModifier,
)
_RANK = {kind.SPEC: rank for rank, kind in enumerate(ORDER)}
_KIND = {kind.SPEC: kind for kind in ORDER}


class Chain:
    """One route's (or one backend's) filters, ready to run."""

    __slots__ = ("filters", "requests", "responses", "needs_body")

    def __init__(self, filters: Iterable[Filter]) -> None:
        self.filters = tuple(sorted(filters, key=lambda f: _RANK[f.SPEC]))
        self.requests = tuple(f for f in self.filters if f.REQUEST)
        self.responses = tuple(f for f in self.filters if f.RESPONSE)
        self.needs_body = any(f.needs_body for f in self.filters)

    def request(self, req) -> bytes | None:
        """Run the request phase: None, or the response that answers the request."""
        for f in self.requests:
            answer = f.request(req)
            if answer is not None:
                return answer
        return None


def build(specs: Iterable, resolve: Callable) -> Chain | None:
    """The chain of these schema filter structs (None when there are none).
    ``resolve(cluster_name)`` gives a cluster's state (None: unresolved)."""
    filters = [_KIND[type(spec)](spec, resolve) for spec in specs]
    return Chain(filters) if filters else None


def respond(filters: tuple, req, block: bytes) -> bytes:
    """Run response phases (a rule's, then its backend's) over a header block."""
    for f in filters:
        block = f.response(req, block)
    return block
