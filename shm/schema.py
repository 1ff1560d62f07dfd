"""The route table: the one contract between the control process and the workers.

Rules that must stay true (workers of an older build may read a newer table
during a rolling update, and the ring refuses a table of another major version):

* Every Struct is ``frozen`` and ``array_like``: positional, compact, immutable.
* Fields are only ever *appended*, always with a default. Never reorder, rename
  or remove a field; bump ``SCHEMA_VERSION`` instead (the ring refuses a table
  whose version differs from the reader's). A new member of a tagged union
  (a filter kind) is unknown to older readers: that is a bump too.
* Tagged unions (path matches) carry their tag as the first array element.
* The table is laid out for lazy decoding: ``Table`` is a small index whose
  virtual hosts and clusters are ``msgspec.Raw`` blobs. A worker decodes the
  index on every generation and a blob only when a request first touches it.

Theory of operation: control compiles objects into a ``CompiledTable`` (plain
Structs by name), ``codec.TableEncoder`` turns it into one ``Table`` message
(re-using the encoded bytes of unchanged blobs), the ring carries the bytes,
and ``codec.decode_index`` gives a worker the index with zero-copy ``Raw``
references into the shared mapping.
"""

from __future__ import annotations

import msgspec

SCHEMA_VERSION = 3  # 2: RequestHeaderTemplate and CORS filters, Action.retry; 3: gateway labels

_S = dict(frozen=True, array_like=True, forbid_unknown_fields=False)
# Leaves (only str, int, bool, bytes fields: they can never be part of a
# reference cycle) are not tracked by the cyclic GC. A 100k-host table has
# 300k of them in each process's newest generation after every build or
# swap; tracked, every collection of that generation would walk them all.
_LEAF = dict(_S, gc=False)


# --- clusters: a backend (Service port) resolved to endpoints ----------------


class Endpoint(msgspec.Struct, **_LEAF):
    address: str
    port: int


class Cluster(msgspec.Struct, **_S):
    """Endpoints of one backend. ``name`` is ``namespace/service:port``."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    # Host header to send upstream, for ExternalName services ("" = keep).
    host_rewrite: str = ""


# --- matching ------------------------------------------------------------------


class PathExact(msgspec.Struct, tag="Exact", **_S):
    value: str


class PathPrefix(msgspec.Struct, tag="PathPrefix", **_S):
    """Segment-aware prefix, stored without a trailing slash ("/" stays "/")."""

    value: str


class PathRegex(msgspec.Struct, tag="RegularExpression", **_S):
    value: str


PathMatch = PathExact | PathPrefix | PathRegex


class HeaderMatch(msgspec.Struct, **_S):
    name: str  # lower-case
    value: str
    kind: str = "Exact"  # Exact | RegularExpression


class QueryMatch(msgspec.Struct, **_S):
    name: str
    value: str
    kind: str = "Exact"


class Match(msgspec.Struct, **_S):
    path: PathMatch
    method: str = ""  # "" = any
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()


# --- actions -------------------------------------------------------------------


class WeightedCluster(msgspec.Struct, **_S):
    """A backendRef. ``cluster`` == "" means it could not be resolved (500)."""

    cluster: str
    weight: int = 1
    # Header modifiers for requests sent to this backend only (after the rule's).
    filters: tuple["Filter", ...] = ()


# --- filters (Gateway API HTTPRoute filters, already validated by control) ---


class HeaderValue(msgspec.Struct, **_S):
    name: str
    value: str


class RequestHeaderModifier(msgspec.Struct, tag="RequestHeaderModifier", **_S):
    set: tuple[HeaderValue, ...] = ()  # replaces every value of the header
    add: tuple[HeaderValue, ...] = ()  # adds a value, keeps the others
    remove: tuple[str, ...] = ()  # lower-case names


class ResponseHeaderModifier(msgspec.Struct, tag="ResponseHeaderModifier", **_S):
    set: tuple[HeaderValue, ...] = ()
    add: tuple[HeaderValue, ...] = ()
    remove: tuple[str, ...] = ()


class RequestRedirect(msgspec.Struct, tag="RequestRedirect", **_S):
    scheme: str = ""  # "" = the request's
    hostname: str = ""  # "" = the request's
    port: int = 0  # 0 = the scheme's well-known port, else the listener's
    path_type: str = ""  # "" | "ReplaceFullPath" | "ReplacePrefixMatch"
    path: str = ""
    status: int = 302


class URLRewrite(msgspec.Struct, tag="URLRewrite", **_S):
    hostname: str = ""  # "" = keep the Host header
    path_type: str = ""  # "" | "ReplaceFullPath" | "ReplacePrefixMatch"
    path: str = ""


class RequestMirror(msgspec.Struct, tag="RequestMirror", **_S):
    """A copy of the request to ``cluster``, response ignored (fire and forget)."""

    cluster: str
    percent: float = 100.0  # of requests mirrored


class TemplatePart(msgspec.Struct, **_S):
    """A piece of a header template: literal text or a value from the request."""

    kind: str  # "text" | "client_ip" | "request_id" | "header" | "path_segment"
    value: str = ""  # the text; the header name (lower-case); the segment number (1 = first)


class HeaderTemplate(msgspec.Struct, **_S):
    name: str
    parts: tuple[TemplatePart, ...] = ()


class RequestHeaderTemplate(msgspec.Struct, tag="RequestHeaderTemplate", **_S):
    """FluxGateRoute requestHeaders with placeholders: set per request, after
    the RequestHeaderModifier. A header whose value comes out empty is not sent."""

    set: tuple[HeaderTemplate, ...] = ()


class CORS(msgspec.Struct, tag="CORS", **_S):
    """Gateway API's HTTPCORSFilter. Origins are lower-case ``scheme://host[:port]``,
    ``*`` or with a ``*.`` label wildcard; ``*`` in methods/headers means any."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int = 5


Filter = (RequestHeaderModifier | ResponseHeaderModifier | RequestRedirect | URLRewrite | RequestMirror
          | RequestHeaderTemplate | CORS)


class RetryPolicy(msgspec.Struct, **_S):
    """When a failed attempt is tried again on another endpoint (HTTPRoute
    ``retry``, FluxGateRoute ``retries``)."""

    attempts: int  # tries after the first
    codes: tuple[int, ...] = ()  # response statuses that are retried (504: a per-try timeout too)
    connect_failure: bool = True
    reset: bool = False  # the upstream closed before any response
    backoff_ms: int = 0


class Action(msgspec.Struct, **_S):
    backends: tuple[WeightedCluster, ...] = ()
    # What a request gets when no backend can be chosen: 500 for a rule whose
    # backends are all unresolved or all weight 0 (Gateway API), else 503.
    request_timeout_ms: int = 0
    # Applied in this fixed order, whatever the order written: request header
    # modifier, header template, CORS (answers preflights at once), redirect
    # (answers at once), rewrite, mirrors; then on the way back CORS and the
    # response header modifier.
    filters: tuple[Filter, ...] = ()
    backend_timeout_ms: int = 0  # per attempt (timeouts.backendRequest); 0 = none
    retry: RetryPolicy | None = None


class RouteEntry(msgspec.Struct, **_S):
    """One match of one rule, in precedence order within its virtual host."""

    match: Match
    action: int  # index into VirtualHost.actions
    source: str  # "kind/namespace/name#rule" for debugging and metrics


class VirtualHost(msgspec.Struct, **_S):
    name: str  # "listener-key|hostname"
    entries: tuple[RouteEntry, ...] = ()
    actions: tuple[Action, ...] = ()
    gateway: str = ""  # "namespace/name" of the Gateway(s) on its socket ("a, b" if several): a metric label


# --- the index -----------------------------------------------------------------


class HostEntry(msgspec.Struct, **_LEAF):
    host: str  # exact "a.example.com" or wildcard "*.example.com" (lower-case)
    vhost: int  # index into Table.vhosts
    single_label: bool = False  # a wildcard that covers exactly one label (Ingress)


class Listener(msgspec.Struct, **_S):
    """One bound socket (address, port) and its host table."""

    name: str  # "address:port"
    address: str  # "" = FLUXGATE_BIND_ADDRESS
    port: int
    protocol: str = "HTTP"
    exact: tuple[HostEntry, ...] = ()
    # Wildcards, most specific (longest suffix) first.
    wildcards: tuple[HostEntry, ...] = ()
    default_vhost: int = -1  # for hosts matched by neither (listener without hostname)
    gateway: str = ""  # as VirtualHost.gateway


class BlobRef(msgspec.Struct, **_LEAF):
    name: str
    digest: int  # crc32 of blob, lets a worker keep a decoded blob across generations
    blob: msgspec.Raw


class Table(msgspec.Struct, **_S):
    schema: int
    generation: int
    listeners: tuple[Listener, ...] = ()
    vhosts: tuple[BlobRef, ...] = ()  # each blob is a VirtualHost
    clusters: tuple[BlobRef, ...] = ()  # each blob is a Cluster
    created: float = 0.0
    source: str = ""  # what this was compiled from (config path, "kubernetes")


class CompiledTable(msgspec.Struct, frozen=True):
    """What compile() returns: plain structs by name, before encoding."""

    listeners: tuple[Listener, ...] = ()
    vhosts: tuple[VirtualHost, ...] = ()  # Listener host entries index into this
    clusters: tuple[Cluster, ...] = ()
    source: str = ""


# --- worker settings ------------------------------------------------------------


class WorkerSettings(msgspec.Struct, frozen=True):
    """What the supervisor hands a worker (validated by control/config.py).

    A command-line argument between processes of one build, not table data:
    the append-only rule above does not bind it.
    """

    shard: str
    index: int
    # Seats: ring worker entries and metrics regions, two per worker slot (a
    # recycled worker's successor starts beside it: control/supervisor.py).
    seats: int = 2
    bind_address: str = "0.0.0.0"
    ring_slots: int = 4
    heartbeat_interval: float = 1.0
    drain_seconds: float = 30.0
    keepalive_timeout: float = 75.0
    upstream_connect_timeout: float = 5.0
    upstream_keepalive: int = 64
    upstream_idle_timeout: float = 60.0
    log_level: str = "info"
    log_format: str = "json"
    access_log: str = "stdout"  # stdout | stderr | off | an absolute path
    access_log_query: bool = False
    access_log_sample_2xx: float = 1.0
    # Tracing (dataplane/tracing.py): off while otlp_endpoint is "". The export's
    # own settings stay with the control process, which exports (control/tracing.py).
    otlp_endpoint: str = ""  # the full OTLP/HTTP traces URL
    trace_sampling: float = 0.01
    # Limits and timeouts (control/config.py says what each means).
    max_request_line_bytes: int = 8192
    max_header_bytes: int = 32768
    max_header_count: int = 100
    max_body_bytes: int = 100 << 20
    max_pipeline: int = 16
    max_connections_per_worker: int = 10000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    request_timeout: float = 300.0
    upstream_response_timeout: float = 60.0
    underscore_headers: str = "reject"
    escaped_slashes: str = "unescape-redirect"
    merge_slashes: bool = True


def route_label(source: str) -> str:
    """A route entry's ``source`` ("kind/namespace/name#rule") → "namespace/name":
    the ``route`` of metrics, access log lines and spans."""
    if not source:
        return ""
    ref = source.split("#", 1)[0]
    parts = ref.split("/")
    return "/".join(parts[1:3]) if len(parts) >= 3 else ref
