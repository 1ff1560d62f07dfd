"""The Ingress annotations FluxGate reads (``fluxgate.io/...``), read into ``Settings``.

Rules:

* ``ANNOTATIONS`` is the whole set. An unknown ``fluxgate.io/`` annotation or a
  value outside the documented ones is an error (``AnnotationError``): the
  Ingress is rejected alone with ``Accepted=False/InvalidAnnotation``, never
  served without what it asked for. Annotations of other prefixes are not read.
* Filters are the IR kinds an HTTPRoute's filters become (``ir.URLRewrite``,
  ``ir.RequestRedirect``), so compile and the workers need nothing of their
  own for Ingress.

The set:

* ``fluxgate.io/rewrite-target: /new``: the matched path is replaced by the
  value before proxying: URLRewrite ReplacePrefixMatch on prefix paths (and the
  defaultBackend's "/"), ReplaceFullPath on Exact paths (what a prefix
  replacement of an exact match means). Must be a valid absolute path.
* ``fluxgate.io/ssl-redirect: "true"|"false"``: "true" makes every route of the
  Ingress answer RequestRedirect ``{scheme: https, statusCode: 301}`` (no
  backends; rewrite-target has no effect then). TLS is not served yet, so the
  redirect leads to port 443 that FluxGate does not answer: opt-in only, and
  unlike ingress-nginx never implied by ``spec.tls``.
* ``fluxgate.io/canary: "true"|"false"``: "true" makes the Ingress a canary of
  the main (non-canary) Ingress that wins each of its host+path pairs (its
  defaultBackend pairs with the winning defaultBackend). It is merged, never
  served alone: a pair without a main is dropped (NoMainIngress). Several
  canaries may share a main, merged oldest first. A canary's own
  rewrite-target and ssl-redirect are ignored (the main's apply, as in
  ingress-nginx), with a note.
* ``fluxgate.io/canary-weight: "N"`` (0-100): N% of the main rule's requests go
  to the canary: the main's backend gets 100 minus the canaries' weights. A
  canary whose weight would bring the sum over 100 is dropped for that pair
  (CanaryWeightExceeded). A canary with neither weight nor header has weight 0.
* ``fluxgate.io/canary-by-header: NAME`` (and optionally
  ``fluxgate.io/canary-by-header-value: VALUE``): requests with that header
  (with exactly that value) go to the canary: a rule with the main's path and
  filters plus a header match, which ranks above the main's match. Without a
  value any value matches (regex ``.*``); unlike ingress-nginx, "always" and
  "never" have no special meaning.
* Canary annotations on a non-canary Ingress are ignored, with a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from control import ir
from control.objects import resources as r
from control.objects.validation import path_problems
from control.translate.filters import HEADER_NAME

REWRITE_TARGET = "fluxgate.io/rewrite-target"
SSL_REDIRECT = "fluxgate.io/ssl-redirect"
CANARY = "fluxgate.io/canary"
CANARY_WEIGHT = "fluxgate.io/canary-weight"
CANARY_BY_HEADER = "fluxgate.io/canary-by-header"
CANARY_BY_HEADER_VALUE = "fluxgate.io/canary-by-header-value"
ANNOTATIONS = (REWRITE_TARGET, SSL_REDIRECT, CANARY, CANARY_WEIGHT, CANARY_BY_HEADER,
               CANARY_BY_HEADER_VALUE)
_MAIN_ONLY = (REWRITE_TARGET, SSL_REDIRECT)
_CANARY_ONLY = (CANARY_WEIGHT, CANARY_BY_HEADER, CANARY_BY_HEADER_VALUE)

_WEIGHT = re.compile(r"^[0-9]{1,3}$")
SSL_REDIRECT_FILTER = ir.RequestRedirect(scheme="https", status_code=301)


class AnnotationError(ValueError):
    """An annotation FluxGate cannot honour; the message names it."""


@dataclass(frozen=True)
class Settings:
    """What an Ingress's annotations ask for."""

    rewrite_target: str = ""
    ssl_redirect: bool = False
    canary: bool = False
    canary_weight: int | None = None  # None: no split by weight
    canary_header: str = ""
    canary_header_value: str = ""  # "": any value

    def filters(self, match: ir.RouteMatch) -> tuple[ir.Filter, ...]:
        """The filters of a rule with ``match``."""
        if self.ssl_redirect:
            return (SSL_REDIRECT_FILTER,)
        if not self.rewrite_target:
            return ()
        kind = "ReplaceFullPath" if match.path.type == "Exact" else "ReplacePrefixMatch"
        return (ir.URLRewrite(path=ir.PathModifier(type=kind, value=self.rewrite_target)),)


def read_settings(annotations: dict[str, str]) -> tuple[Settings, list[str]]:
    """The settings, and notes on annotations that are ignored; AnnotationError if invalid."""
    for name in sorted(annotations):
        if name.startswith(r.FLUXGATE_ANNOTATION_PREFIX) and name not in ANNOTATIONS:
            raise AnnotationError(f"{_at(name)}: unknown annotation (FluxGate reads "
                                  + ", ".join(ANNOTATIONS) + ")")
    canary = _flag(annotations, CANARY)
    ssl_redirect = _flag(annotations, SSL_REDIRECT)
    target = annotations.get(REWRITE_TARGET, "")
    if REWRITE_TARGET in annotations and (problems := path_problems(target)):
        raise AnnotationError(f"{_at(REWRITE_TARGET)}: " + "; ".join(problems))
    weight = None
    if CANARY_WEIGHT in annotations:
        text = annotations[CANARY_WEIGHT]
        if not _WEIGHT.match(text) or int(text) > 100:
            raise AnnotationError(f"{_at(CANARY_WEIGHT)}: {text!r} is not a whole number from 0 to 100")
        weight = int(text)
    header = annotations.get(CANARY_BY_HEADER, "")
    if CANARY_BY_HEADER in annotations and (len(header) > 256 or not HEADER_NAME.match(header)):
        raise AnnotationError(f"{_at(CANARY_BY_HEADER)}: {header!r} is not a valid header name")
    value = annotations.get(CANARY_BY_HEADER_VALUE, "")
    if CANARY_BY_HEADER_VALUE in annotations:
        if not header:
            raise AnnotationError(f"{_at(CANARY_BY_HEADER_VALUE)}: needs {CANARY_BY_HEADER}")
        if not value or any(c in value for c in "\r\n\0"):
            raise AnnotationError(f"{_at(CANARY_BY_HEADER_VALUE)}: must be a non-empty header value")

    notes = []
    if canary:
        ignored = [n for n in _MAIN_ONLY if n in annotations]
        if ignored:
            notes.append(f"{', '.join(ignored)} ignored on a canary Ingress (the main Ingress's apply)")
        if weight is None and not header:
            weight = 0
        return Settings(canary=True, canary_weight=weight, canary_header=header,
                        canary_header_value=value), notes
    ignored = [n for n in _CANARY_ONLY if n in annotations]
    if ignored:
        notes.append(f"{', '.join(ignored)} ignored: {CANARY} is not \"true\"")
    if ssl_redirect and target:
        notes.append(f"{REWRITE_TARGET} has no effect while {SSL_REDIRECT} is \"true\"")
    return Settings(rewrite_target=target, ssl_redirect=ssl_redirect), notes


def _flag(annotations: dict[str, str], name: str) -> bool:
    value = annotations.get(name, "false")
    if value not in ("true", "false"):
        raise AnnotationError(f"{_at(name)}: {value!r} must be \"true\" or \"false\"")
    return value == "true"


def _at(name: str) -> str:
    return f"metadata.annotations[{name}]"
