"""The intermediate representation: what translate() decided, before compile() lays it out.

Rules:

* Plain, frozen data, no behaviour beyond small conveniences: every decision
  (which routes attach where, on which hostnames, to which endpoints) has been
  made by translate; compile only indexes, sorts and interns.
* Only what is valid is here. Rejected objects, routes that attached nowhere,
  dropped rules and unresolvable references are absent, except that an
  unresolvable backendRef stays as a ``Backend`` with ``cluster=""`` so its
  share of traffic fails the way Gateway API requires (500).
* Values are kept as written where compile owns a normalisation (PathPrefix
  trailing slashes), so the IR dump reads like the input.
* Everything is sorted or in input order, never in hash order: equal inputs
  give equal IRs.

Growth: new match kinds extend ``RouteMatch``; a new filter kind is one more
``Filter.type`` (its config shaped like its Gateway API object) that compile
maps to a schema filter; other route kinds get their own rule types and a
field on ``Listener``.
"""

from __future__ import annotations

import functools

from typing import Any, Optional

import msgspec

_S = dict(frozen=True, kw_only=True)

ANY_HOST = "*"  # the hostname of a route attachment that matches every host


def one_label(host: str) -> str:
    """An Ingress host as an attachment hostname: its wildcard covers one label only."""
    return "+" + host[1:] if host.startswith("*.") else host


# --- backends --------------------------------------------------------------------------


class Endpoint(msgspec.Struct, frozen=True, order=True):
    address: str
    port: int


class Cluster(msgspec.Struct, **_S):
    """A resolved backend: a Service port and its ready endpoints."""

    name: str  # "namespace/service:port"
    endpoints: tuple[Endpoint, ...] = ()
    host_rewrite: str = ""  # ExternalName services: the Host header upstream


class Backend(msgspec.Struct, **_S):
    cluster: str  # "" = could not be resolved
    weight: int = 1
    filters: tuple["Filter", ...] = ()  # header modifiers applied only when this backend is chosen


# --- routes ----------------------------------------------------------------------------


class PathMatch(msgspec.Struct, **_S):
    type: str  # "Exact" | "PathPrefix" | "RegularExpression"
    value: str


class HeaderMatch(msgspec.Struct, **_S):
    name: str  # lower-case
    value: str
    type: str = "Exact"  # "Exact" | "RegularExpression"


class QueryMatch(msgspec.Struct, **_S):
    name: str  # case-sensitive
    value: str
    type: str = "Exact"


class RouteMatch(msgspec.Struct, **_S):
    path: PathMatch
    method: str = ""  # "" = any
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()


class Filter(msgspec.Struct, **_S):
    type: str
    config: dict[str, Any] = {}


class Retry(msgspec.Struct, **_S):
    """A retry policy (see shm.schema.RetryPolicy)."""

    attempts: int
    codes: tuple[int, ...] = ()
    connect_failure: bool = True
    reset: bool = False
    backoff_ms: int = 0


class Rule(msgspec.Struct, **_S):
    index: int  # position in spec.rules: the last tie-breaker of precedence
    name: str = ""
    matches: tuple[RouteMatch, ...]
    backends: tuple[Backend, ...] = ()
    filters: tuple[Filter, ...] = ()
    timeout_ms: int = 0  # 0 = no route timeout
    backend_timeout_ms: int = 0  # per attempt (timeouts.backendRequest); 0 = none
    retry: Optional[Retry] = None


class Route(msgspec.Struct, dict=True, **_S):
    kind: str = "HTTPRoute"
    namespace: str
    name: str
    # creationTimestamp as epoch seconds; None when the input has none.
    created: Optional[float] = None
    rules: tuple[Rule, ...] = ()

    @functools.cached_property
    def ref(self) -> str:  # computed once (dict=True gives it room): a hot sort key
        return f"{self.kind}/{self.namespace}/{self.name}"


# --- listeners -------------------------------------------------------------------------


class Attachment(msgspec.Struct, **_S):
    """A route served by a listener, on the hostnames both agree on."""

    route: str  # Route.ref
    # exact; "*.suffix": any number of labels before the suffix (Gateway API);
    # "+.suffix": exactly one label (Ingress); or ANY_HOST
    hostnames: tuple[str, ...]


class Listener(msgspec.Struct, **_S):
    gateway: str  # "namespace/name"
    name: str
    addresses: tuple[str, ...] = ("",)  # "" = FLUXGATE_BIND_ADDRESS
    port: int
    protocol: str
    hostname: str = ""  # "" = any
    programmed: bool  # False: in status only, not in the table (HTTPS until TLS lands)
    attachments: tuple[Attachment, ...] = ()


class IR(msgspec.Struct, **_S):
    listeners: tuple[Listener, ...] = ()
    routes: tuple[Route, ...] = ()  # sorted by ref
    clusters: tuple[Cluster, ...] = ()  # sorted by name

    def to_builtins(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)
