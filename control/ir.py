"""The intermediate representation: what translate() decided, before compile() lays it out.

Rules:

* Plain, frozen data, no behaviour beyond small conveniences: every decision
  (which routes attach where, on which hostnames, to which endpoints) has been
  made by translate; compile only indexes, sorts and interns.
* Only what is valid is here. Rejected objects, routes that attached nowhere,
  dropped rules and unresolvable references are absent, except that an
  unresolvable backendRef stays as a ``Backend`` with ``cluster=""`` so its
  share of traffic fails the way Gateway API requires (500), and a mirror's
  as a ``RequestMirror`` with ``cluster=""`` (compile leaves it out).
* Values are kept as written where compile owns a normalisation (PathPrefix
  trailing slashes, header-name case), so the IR dump reads like the input.
* No untyped data: no ``dict`` or ``Any`` field (tests/control/test_ir.py).
* Everything is sorted or in input order, never in hash order: equal inputs
  give equal IRs.

Filters are typed: one frozen Struct per kind, tagged with its name (the
Gateway API's ``type``, and the tag of the ``shm.schema`` filter it compiles
to), joined in the tagged union ``Filter``. A kind holds what its source said,
checked and in Python spelling (``status_code``, ``allow_origins``): compile
owns the rest (lower-casing names, parsing templates, the schema's layout).
Fields with their defaults are left out of a dump, so ``to_builtins`` shows a
filter as ``{type: URLRewrite, path: {type: ReplacePrefixMatch, value: /v2}}``.
``ExtensionRef`` is the one kind without a schema filter: translate answers
its rule with 500 and never hands it to compile.

A new filter kind is exactly:

1. its schema Struct in ``shm/schema.py``, in ``schema.Filter`` (a schema
   version bump: older workers do not know it);
2. its Struct here, tagged with the same name, in ``Filter`` (and in
   ``BackendFilter`` if a backendRef may carry it);
3. what builds it: for a Gateway API filter type a reader in
   ``control/translate/filters.py`` (one row of ``READERS``); for a filter
   another object asks for, the translator of that object (as
   ``fluxgateroute`` builds ``RequestHeaderTemplate``);
4. its compile function, one row of ``compile.FILTERS``;
5. its worker filter class (``dataplane/filters/``), and the tests.

Nothing else lists the kinds: tests/control/test_ir.py checks that the schema
union, this union and compile's table agree.

Growth: new match kinds extend ``RouteMatch``; other route kinds get their own
rule types and a field on ``Listener``.
"""

from __future__ import annotations

import functools
import typing
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
    filters: tuple["BackendFilter", ...] = ()  # applied only when this backend is chosen


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


# --- filters ---------------------------------------------------------------------------

# A filter kind: tagged with its name under "type"; defaults left out of a dump
# (a filter says what it changes).
_F = dict(frozen=True, kw_only=True, tag_field="type", omit_defaults=True)


class HeaderValue(msgspec.Struct, **_S):
    name: str  # as written
    value: str


class RequestHeaderModifier(msgspec.Struct, tag="RequestHeaderModifier", **_F):
    set: tuple[HeaderValue, ...] = ()
    add: tuple[HeaderValue, ...] = ()
    remove: tuple[str, ...] = ()  # names as written


class ResponseHeaderModifier(msgspec.Struct, tag="ResponseHeaderModifier", **_F):
    set: tuple[HeaderValue, ...] = ()
    add: tuple[HeaderValue, ...] = ()
    remove: tuple[str, ...] = ()


class PathModifier(msgspec.Struct, **_S):
    """Gateway API's HTTPPathModifier: ``value`` is its replaceFullPath or replacePrefixMatch."""

    type: str  # "ReplaceFullPath" | "ReplacePrefixMatch"
    value: str


class RequestRedirect(msgspec.Struct, tag="RequestRedirect", **_F):
    scheme: str = ""  # "" = the request's
    hostname: str = ""  # "" = the request's
    port: int = 0  # 0 = not set
    path: Optional[PathModifier] = None
    status_code: int = 302


class URLRewrite(msgspec.Struct, tag="URLRewrite", **_F):
    hostname: str = ""  # "" = keep the Host header
    path: Optional[PathModifier] = None


class RequestMirror(msgspec.Struct, tag="RequestMirror", **_F):
    # Its backendRef, resolved like a Backend's: "" = could not be (the mirror
    # is then left out; the rule keeps serving).
    cluster: str
    percent: float = 100.0


class RequestHeaderTemplate(msgspec.Struct, tag="RequestHeaderTemplate", **_F):
    """FluxGateRoute requestHeaders with placeholders, values as written (``ip=%{client_ip}``)."""

    set: tuple[HeaderValue, ...] = ()


class CORS(msgspec.Struct, tag="CORS", **_F):
    """Gateway API's HTTPCORSFilter, as written."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int = 5


class ExtensionRef(msgspec.Struct, tag="ExtensionRef", **_F):
    """A reference to a filter FluxGate does not have: kept only to be reported."""

    group: str  # "" = core
    kind: str
    name: str


Filter = (RequestHeaderModifier | ResponseHeaderModifier | RequestRedirect | URLRewrite | RequestMirror
          | RequestHeaderTemplate | CORS | ExtensionRef)
# What a backendRef may carry (Gateway API extended support: header modifiers).
BackendFilter = RequestHeaderModifier | ResponseHeaderModifier


def filter_kinds(union: Any = Filter) -> dict[str, type]:
    """The kinds of a filter union by tag: {"URLRewrite": URLRewrite, ...}."""
    return {kind.__struct_config__.tag: kind for kind in typing.get_args(union)}


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
        """The IR as plain dicts and lists (tuples too become lists, which YAML
        needs), filters tagged by ``type``; ``msgspec.convert(d, IR)`` reads it back."""
        return msgspec.json.decode(msgspec.json.encode(self))
