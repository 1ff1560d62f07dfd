"""FluxGateRoutes (fluxgate.io/v1alpha3): HTTPRoute's rules plus what HTTPRoute cannot say.

A FluxGateRoute attaches exactly like an HTTPRoute (``httproute.attach_route``:
the same parentRefs, listeners, hostnames and conditions; a listener admits it
wherever it admits HTTPRoutes) and its rules are first translated by
``httproute.rules`` (matches, filters, backendRefs, timeouts, with the same
validation and the same reasons for dropping a rule). Then, per kept rule:

* ``canary``: requests carrying the canary header (any value, or the given
  one) or cookie go to the canary backends: an extra IR rule whose matches are
  the rule's matches plus that header condition (a cookie is a
  ``RegularExpression`` on the ``cookie`` header), so it ranks above the rule
  by the usual precedence (more header matches). It gets the index
  ``CANARY_INDEX + i`` (rule indexes must be unique per route; spec.rules has
  at most 16). The other requests split by ``weight`` percent: the rule's own
  backends and the canary's become one weighted list.
* ``requestHeaders``: values without a placeholder become an ordinary
  ``RequestHeaderModifier`` ``set`` (merged with the rule's own). Values with
  placeholders (``%{client_ip}``, ``%{request_id}``, ``%{header:NAME}``,
  ``%{path_segment:N}``) become a ``RequestHeaderTemplate`` filter, which
  the data plane fills in per request (after the modifier). A name may not be
  in both the rule's modifier and requestHeaders: which one wins would be a
  guess, so the rule is dropped with a reason.
* ``retries``: a retry policy. ``connect-failure`` and ``reset`` are the
  failures of those names; ``5xx`` retries every 5xx status (504 includes a
  per-try timeout, timeouts.backendRequest); ``gateway-error`` 502, 503, 504;
  ``retriable-4xx`` 409.
"""

from __future__ import annotations

import math
import re

import msgspec

from control import ir
from control.translate import httproute
from control.objects import resources as r
from control.translate.backends import BackendResolver, Problem
from control.objects.validation import PLACEHOLDER, duration_ms

CANARY_INDEX = 100  # the canary rule of spec.rules[i] has index CANARY_INDEX + i


def rules(
    route: r.FluxGateRoute, resolver: BackendResolver
) -> tuple[list[ir.Rule], list[str], list[Problem]]:
    """Valid IR rules, dropped-rule reasons, unresolved refs."""
    base, dropped, problems = httproute.rules(route, resolver)  # type: ignore[arg-type]
    rules: list[ir.Rule] = []
    for rule in base:
        spec = route.spec.rules[rule.index]
        if any(f.type == "ExtensionRef" for f in spec.filters):
            rules.append(rule)  # answered 500 whatever else it says (httproute.rules)
            continue
        try:
            rule = _with_headers(rule, spec.request_headers)
        except _Drop as exc:
            dropped.append(f"rule {rule.index}: {exc}")
            continue
        canary = None
        if spec.canary is not None:
            try:
                rule, canary = _with_canary(route, rule, spec.canary, resolver, problems)
            except _Drop as exc:
                dropped.append(f"rule {rule.index}: {exc}")
                continue
        if spec.retries is not None:
            rule = _replace(rule, retry=retry_policy(spec.retries))
            if canary is not None:
                canary = _replace(canary, retry=rule.retry)
        if canary is not None:
            rules.append(canary)
        rules.append(rule)
    dropped.sort(key=_rule_number)  # httproute's reasons and ours, in rule order
    return sorted(rules, key=lambda x: x.index), dropped, problems


class _Drop(ValueError):
    """Why a rule cannot be served."""


def _rule_number(reason: str) -> int:
    m = re.match(r"rule (\d+):", reason)
    return int(m.group(1)) if m else 0


# --- requestHeaders ------------------------------------------------------------------


def has_placeholder(value: str) -> bool:
    return PLACEHOLDER.search(value) is not None


def _with_headers(rule: ir.Rule, headers: tuple[r.HeaderValue, ...]) -> ir.Rule:
    if not headers:
        return rule
    plain = tuple(ir.HeaderValue(name=h.name, value=h.value) for h in headers if not has_placeholder(h.value))
    templated = tuple(ir.HeaderValue(name=h.name, value=h.value) for h in headers if has_placeholder(h.value))
    filters = list(rule.filters)
    modifier = next((i for i, f in enumerate(filters) if isinstance(f, ir.RequestHeaderModifier)), None)
    if modifier is not None:
        f = filters[modifier]
        taken = {h.name.lower() for h in f.set + f.add} | {name.lower() for name in f.remove}
        clash = [h.name for h in headers if h.name.lower() in taken]
        if clash:
            raise _Drop(f"requestHeaders: {clash[0]!r} is also in the rule's RequestHeaderModifier")
        if plain:
            filters[modifier] = _replace(f, set=f.set + plain)
    elif plain:
        filters.insert(0, ir.RequestHeaderModifier(set=plain))
    if templated:
        filters.append(ir.RequestHeaderTemplate(set=templated))
    return _replace(rule, filters=tuple(filters))


# --- retries -------------------------------------------------------------------------

_RETRY_CODES = {
    "5xx": range(500, 600),
    "gateway-error": (502, 503, 504),
    "retriable-4xx": (409,),
}


def retry_policy(retries: r.Retries) -> ir.Retry:
    codes = sorted({c for on in retries.retry_on for c in _RETRY_CODES.get(on, ())})
    return ir.Retry(
        attempts=retries.attempts, codes=tuple(codes),
        connect_failure="connect-failure" in retries.retry_on, reset="reset" in retries.retry_on,
        backoff_ms=duration_ms(retries.backoff) if retries.backoff else 0,
    )


# --- canary --------------------------------------------------------------------------


def cookie_pattern(name: str, value: str) -> str:
    """A regular expression matching a whole Cookie header that carries name=value."""
    return rf"(?:^|.*;\s*){re.escape(name)}={re.escape(value)}(?:;.*|$)"


def _with_canary(
    route: r.FluxGateRoute, rule: ir.Rule, canary: r.Canary,
    resolver: BackendResolver, problems: list[Problem],
) -> tuple[ir.Rule, ir.Rule | None]:
    """The rule with canary backends in its weighted split, and the canary rule
    (None when the canary is chosen by weight only)."""
    backends = []
    for ref in canary.backend_refs:
        backend, problem = resolver.resolve(route, ref)  # type: ignore[arg-type]
        backends.append(backend)
        if problem:
            problems.append(problem)
    conditions: list[ir.HeaderMatch] = []
    if canary.header is not None:
        name = canary.header.name.lower()
        if canary.header.value is None:
            conditions.append(ir.HeaderMatch(name=name, value=".*", type="RegularExpression"))
        else:
            conditions.append(ir.HeaderMatch(name=name, value=canary.header.value))
    if canary.cookie is not None:
        conditions.append(ir.HeaderMatch(name="cookie", type="RegularExpression",
                                         value=cookie_pattern(canary.cookie.name, canary.cookie.value)))
    matches = []
    for match in rule.matches:
        for cond in conditions:
            if any(h.name == cond.name for h in match.headers):
                raise _Drop(f"canary: the rule already matches on header {cond.name!r}")
            matches.append(_replace(match, headers=match.headers + (cond,)))
    canary_rule = _replace(
        rule, index=CANARY_INDEX + rule.index,
        name=f"{rule.name}-canary" if rule.name else "canary",
        matches=tuple(matches), backends=tuple(backends),
    ) if matches else None
    return _replace(rule, backends=split(rule.backends, tuple(backends), canary.weight)), canary_rule


def split(main: tuple[ir.Backend, ...], canary: tuple[ir.Backend, ...], percent: int) -> tuple[ir.Backend, ...]:
    """One weighted list giving the canary backends ``percent`` % of the traffic,
    each side keeping its own proportions (weights reduced by their gcd)."""
    if percent == 0 or not canary:
        return main
    m_total = sum(b.weight for b in main)
    c_total = sum(b.weight for b in canary)
    if c_total == 0:
        return main
    if m_total == 0:  # the rule's own backends take nothing: the canary, at its share
        m_total = 1
    weights = [b.weight * (100 - percent) * c_total for b in main]
    weights += [b.weight * percent * m_total for b in canary]
    g = math.gcd(*weights) or 1
    return tuple(_replace(b, weight=w // g) for b, w in zip(main + canary, weights))


def _replace(obj, **changes):
    return msgspec.structs.replace(obj, **changes)
