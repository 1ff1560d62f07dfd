"""Configuration: one frozen Config for every ``FLUXGATE_*`` variable and its flag.

Rules:
* Every setting is declared once, in ``SETTINGS``: its environment variable,
  its command-line flag (the same name), its type, default and bounds.
* Precedence: command-line flag > environment variable > default.
* A bad value stops the start with a message that names the variable (and the
  flag, when that is where it came from). Nothing falls back silently; an
  unknown ``FLUXGATE_*`` variable is an error too, since it is almost always a
  typo that would otherwise be ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import ipaddress
import math
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from shm import ring
from shm.schema import WorkerSettings


class ConfigError(ValueError):
    """A setting has a bad value; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """How one Config field is read: its type, bounds and help."""

    name: str
    kind: Callable[[str], Any]
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return "FLUXGATE_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _access_log(raw: str) -> str:
    if raw in ("stdout", "stderr", "off"):
        return raw
    if not os.path.isabs(raw):
        raise ValueError("must be stdout, stderr, off or an absolute file path")
    parent = os.path.dirname(raw) or "/"
    if not os.path.isdir(parent):
        raise ValueError(f"directory {parent} does not exist")
    return raw


def _otlp_endpoint(raw: str) -> str:
    """"" (tracing off) or the full OTLP/HTTP traces URL."""
    raw = raw.strip()
    if not raw:
        return ""
    url = urllib.parse.urlsplit(raw)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("expected an http:// or https:// URL of an OTLP/HTTP collector, e.g."
                         " http://otel-collector:4318")
    url.port  # noqa: B018  (raises ValueError for a bad port)
    if url.query or url.fragment:
        raise ValueError("expected a URL without a query or fragment")
    return raw.rstrip("/") + "/v1/traces" if url.path in ("", "/") else raw


def _otel_missing() -> str:
    """What tracing needs and is not installed, as "X is" or "X and Y are" ("" when all is there)."""
    missing = []
    for module, package in (("opentelemetry.sdk.trace", "opentelemetry-sdk"),
                            ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                             "opentelemetry-exporter-otlp-proto-http")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            missing.append(package)
    return " and ".join(missing) + (" are" if len(missing) > 1 else " is") if missing else ""


def _setting(default, kind, help, low=None, high=None, choices=()):
    """A Config field carrying its Setting (name and default are filled in below)."""
    return dataclasses.field(
        default=default, metadata={"setting": (kind, help, low, high, tuple(choices))}
    )


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _address(text: str) -> str:
    text = text.strip()
    ipaddress.ip_address(text)  # raises ValueError with a clear message
    return text


_SHARD_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")


def _shard(text: str) -> str:
    text = text.strip()
    if text and not _SHARD_RE.match(text):
        raise ValueError(
            "expected 1-64 characters of a-z, 0-9, '.', '_', '-', starting and "
            "ending with a letter or digit"
        )
    return text


# RFC 1123 label (a namespace) and subdomain (a Gateway, a GatewayClass).
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _items(text: str) -> list[str]:
    """A comma-separated list; blanks around items ignored; empty items refused."""
    if not text.strip():
        return []
    items = [item.strip() for item in text.split(",")]
    if "" in items:
        raise ValueError("empty item in a comma-separated list")
    return items


def _namespace_name(text: str) -> str:
    if not _DNS_LABEL_RE.match(text):
        raise ValueError(f"{text!r} is not a namespace name (a lower-case DNS label)")
    return text


def _subdomain_name(text: str, what: str = "name") -> str:
    if len(text) > 253 or not _DNS_SUBDOMAIN_RE.match(text):
        raise ValueError(f"{text!r} is not a valid {what} (a lower-case DNS subdomain)")
    return text


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_namespace_name(item) for item in _items(text)))


def _gateways(text: str) -> tuple[str, ...]:
    """"ns/name,ns/name" → ("ns/name", ...), each part checked."""
    out = []
    for item in _items(text):
        ns, slash, name = item.partition("/")
        if not slash or "/" in name:
            raise ValueError(f"{item!r} is not namespace/name")
        out.append(f"{_namespace_name(ns)}/{_subdomain_name(name, 'Gateway name')}")
    return tuple(dict.fromkeys(out))


def _gateway_class(text: str) -> str:
    return _subdomain_name(text.strip(), "GatewayClass name")


def _optional_namespace(text: str) -> str:
    text = text.strip()
    return _namespace_name(text) if text else ""


def _pod_name(text: str) -> str:
    text = text.strip()
    return _subdomain_name(text, "pod name") if text else ""


def _status_address(text: str) -> str:
    """An IP address or a DNS name (Ingress ``status.loadBalancer.ingress``)."""
    text = text.strip()
    if not text:
        return ""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        return _subdomain_name(text, "IP address or hostname")


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_LEASE_NAMESPACE = "fluxgate-system"


@dataclass(frozen=True)
class Config:
    """Every setting, its default and bounds. Fields are the single source."""

    config: str = _setting("", str, "YAML file or directory of Kubernetes objects (file mode)")
    # --- Kubernetes mode (issue 5): list + watch the API instead of reading files ---
    kubernetes: bool = _setting(False, _bool, "watch the Kubernetes API instead of --config (Kubernetes mode)")
    kubeconfig: str = _setting("", str, "Kubernetes mode: kubeconfig file (default: in-cluster, else"
                               " $KUBECONFIG or ~/.kube/config)")
    resync_seconds: float = _setting(15.0, float, "Kubernetes mode: renew every watch this often, from"
                                     " its resourceVersion (no re-list); fluxgate controller: a full"
                                     " status pass this often (s)", 1, 86400)
    relist_seconds: float = _setting(600.0, float, "Kubernetes mode: list every kind again this often,"
                                     " to repair what a watch cannot (a store restored from a backup);"
                                     " 0 = never (s)", 0, 86400)
    gateways: tuple = _setting((), _gateways, "serve only these Gateways (comma-separated namespace/name);"
                               " default: every Gateway of --gateway-class")
    gateway_class: str = _setting("fluxgate", _gateway_class, "the GatewayClass (and IngressClass) this"
                                  " shard serves")
    watch_namespaces: tuple = _setting((), _namespaces, "Kubernetes mode: watch only these namespaces"
                                       " (comma-separated); default: all")
    # --- `fluxgate controller` (issue 5): leader election, status, admission webhook ---
    lease_namespace: str = _setting("", _optional_namespace, "controller: namespace of the leader"
                                    " election Lease (default: the pod's namespace in a cluster,"
                                    " else fluxgate-system)")
    lease_duration: int = _setting(15, int, "controller: a leader that stops renewing is replaced after"
                                   " this long (whole s)", 1, 3600)
    lease_renew_deadline: float = _setting(10.0, float, "controller: a leader that cannot renew for this"
                                           " long stops writing (s; < lease duration)", 0.01, 3600)
    lease_retry_period: float = _setting(2.0, float, "controller: renew / try to acquire the Lease this"
                                         " often (s; < renew deadline / 1.2)", 0.01, 600)
    pod_name: str = _setting("", _pod_name, "controller: this replica's identity in the Lease (default:"
                             " hostname and pid; set it from the downward API metadata.name)")
    webhook_address: str = _setting("0.0.0.0", _address, "controller: address of the admission webhook"
                                    " (HTTPS)")
    webhook_port: int = _setting(9443, int, "controller: admission webhook port", 1, 65535)
    webhook_cert: str = _setting("", str, "controller: PEM certificate of the webhook (with"
                                 " --webhook-key; neither: no webhook)")
    webhook_key: str = _setting("", str, "controller: PEM private key of the webhook")
    ingress_status_address: str = _setting("", _status_address, "controller: IP or hostname written to"
                                           " accepted Ingresses' status.loadBalancer (default: Ingress"
                                           " status is left alone)")
    shard: str = _setting("", _shard, "shard name; names the shared memory (default: derived from --config)")
    workers: int = _setting(0, int, "worker processes (0: one per CPU)", 0, ring.MAX_WORKERS // 2)
    bind_address: str = _setting("0.0.0.0", _address, "address listeners bind unless a Gateway names one")
    admin_address: str = _setting("0.0.0.0", _address, "address of the admin server")
    admin_port: int = _setting(9090, int, "admin server port (/metrics, /healthz, /readyz, /debug)", 1, 65535)
    ingress_http_port: int = _setting(80, int, "port Ingress objects are served on (HTTP)", 1, 65535)
    drain_seconds: float = _setting(30.0, float, "on SIGTERM, time to finish in-flight requests (s)", 0, 3600)
    shutdown_delay_seconds: float = _setting(
        5.0, float, "on SIGTERM, /readyz fails at once and listeners keep accepting this long (every response"
        " with Connection: close), so endpoints are removed before they stop (s); a second signal skips it",
        0, 3600)
    heartbeat_timeout: float = _setting(10.0, float, "a worker silent this long is hung and killed (s)", 1, 600)
    worker_start_timeout: float = _setting(30.0, float, "a new worker must serve a table within (s)", 1, 600)
    drift_seconds: float = _setting(
        10.0, float, "a worker serving another table than the published one this long is recycled (s)", 0.5, 3600)
    ring_slots: int = _setting(4, int, "table slots in shared memory", 3, ring.MAX_SLOTS)
    watch_interval: float = _setting(0.25, float, "file mode: how often to check the config for edits (s)", 0.01, 60)
    holdoff_ms: int = _setting(100, int, "after a change, wait this long for more before publishing", 0, 5000)
    holdoff_max_ms: int = _setting(500, int, "never delay a publish more than this after a change", 0, 60000)
    keepalive_timeout: float = _setting(75.0, float, "idle downstream keep-alive connections close after (s)", 0, 3600)
    upstream_connect_timeout: float = _setting(5.0, float, "upstream connect timeout (s)", 0.01, 600)
    upstream_keepalive: int = _setting(64, int, "idle keep-alive connections kept per upstream endpoint", 0, 100000)
    upstream_idle_timeout: float = _setting(60.0, float, "idle upstream connections close after (s)", 0.1, 3600)
    # --- limits and timeouts for what clients send (issue 4: hardening) ---
    max_request_line_bytes: int = _setting(8192, int, "longest request line; longer is answered 414", 256, 1 << 20)
    max_header_bytes: int = _setting(32768, int, "largest request head (line and headers); larger is 431",
                                     1024, 1 << 20)
    max_header_count: int = _setting(100, int, "most request headers; more is answered 431", 1, 10000)
    max_body_bytes: int = _setting(100 << 20, int, "largest request body, 0 = no limit; larger is 413", 0, 1 << 50)
    max_pipeline: int = _setting(16, int, "pipelined requests queued per connection before reading pauses",
                                 1, 1024)
    max_connections_per_worker: int = _setting(10000, int, "client connections per worker; beyond, requests"
                                               " are answered 503 and the connection closed", 1, 1 << 20)
    max_connections: int = _setting(0, int, "client connections per pod, 0 = no pod limit; split evenly"
                                    " across workers (the kernel spreads connections evenly)", 0, 1 << 24)
    header_timeout: float = _setting(10.0, float, "time to receive a request's line and headers, from its"
                                     " first byte or the connection's start; then 408 and close (s)", 0.05, 3600)
    body_timeout: float = _setting(30.0, float, "longest pause while receiving a request body (s)", 0.05, 3600)
    request_timeout: float = _setting(300.0, float, "time to receive a whole request, 0 = none (s)", 0, 86400)
    upstream_response_timeout: float = _setting(
        60.0, float, "time from a request sent upstream to its response head, 0 = none; then 504 (s)", 0, 86400)
    underscore_headers: str = _setting("reject", str, "request header names with '_': reject (400), drop, allow",
                                       choices=("reject", "drop", "allow"))
    escaped_slashes: str = _setting(
        "unescape-redirect", str, "%2F and %5C in paths: keep (not separators), reject (400), unescape-redirect"
        " (307 to the unescaped path), unescape-forward", choices=("keep", "reject", "unescape-redirect",
                                                                    "unescape-forward"))
    merge_slashes: bool = _setting(True, _bool, "treat runs of '/' in paths as one")
    native: bool = _setting(True, _bool, "workers run the data path's compiled modules when they are built"
                            " (false: their pure-Python sources, e.g. to rule them out)")
    log_level: str = _setting("info", str, "log level", choices=("debug", "info", "warning", "error"))
    log_format: str = _setting("json", str, "log format", choices=("json", "text"))
    # --- observability and operations (issue 12) ---
    access_log: str = _setting("stdout", _access_log, "one JSON line per request: stdout, stderr, off, or an"
                               " absolute file path (appended to)")
    access_log_query: bool = _setting(False, _bool, "access log: keep the query in the path (it may carry"
                                      " tokens)")
    access_log_sample_2xx: float = _setting(1.0, float, "access log: the share of 2xx requests logged (other"
                                            " statuses always are)", 0, 1)
    debug_token: str = _setting("", str, "bearer token for /debug/* from addresses other than loopback"
                                " (empty: /debug/* answers loopback only)")
    # --- tracing (issue 12): OpenTelemetry, the fluxgate[otel] extra ---
    otlp_endpoint: str = _setting("", _otlp_endpoint, "OpenTelemetry tracing: the OTLP/HTTP collector, e.g."
                                  " http://otel-collector:4318 (/v1/traces is added to a URL without a path);"
                                  " empty: tracing off (traceparent and tracestate still pass to the upstream)")
    otlp_timeout: float = _setting(10.0, float, "tracing: the longest one export of spans may take, retries"
                                   " included (s)", 0.1, 300)
    trace_sampling: float = _setting(0.01, float, "tracing: the share of new traces sampled (0-1); a request"
                                     " with a valid traceparent follows its sampled flag", 0, 1)
    trace_queue_size: int = _setting(2048, int, "tracing: spans waiting for export in the pod's control"
                                     " process; beyond, spans are dropped (counted)", 1, 1 << 20)
    trace_service_name: str = _setting("", str, "tracing: the resource's service.name (default:"
                                       " OTEL_SERVICE_NAME, else fluxgate)")

    @classmethod
    def load(
        cls, flags: Mapping[str, str | None] | None = None, environ: Mapping[str, str] | None = None
    ) -> "Config":
        """Build and validate. ``flags``: field name -> raw text (None = not given)."""
        environ = os.environ if environ is None else environ
        flags = flags or {}
        unknown = sorted(
            k for k in environ
            if k.startswith("FLUXGATE_") and k[9:].lower() not in _BY_NAME
        )
        if unknown:
            raise ConfigError(
                f"unknown setting {', '.join(unknown)}; known: "
                + ", ".join(s.env for s in SETTINGS)
            )
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw, origin = flags.get(s.name), s.flag
            if raw is None:
                raw, origin = environ.get(s.env), s.env
            if raw is None:
                continue
            values[s.name] = _parse(s, raw, origin)
        cfg = cls(**values)
        cfg._check()
        return cfg

    def _check(self) -> None:
        if self.kubernetes and self.config:
            raise ConfigError(
                "usage: --kubernetes (FLUXGATE_KUBERNETES) and --config (FLUXGATE_CONFIG) exclude "
                "each other: serve either the Kubernetes API or files"
            )
        if self.watch_namespaces:
            outside = [g for g in self.gateways if g.partition("/")[0] not in self.watch_namespaces]
            if outside:
                raise ConfigError(
                    f"FLUXGATE_GATEWAYS names {', '.join(outside)} outside FLUXGATE_WATCH_NAMESPACES "
                    f"({', '.join(self.watch_namespaces)}): such a Gateway would never be seen"
                )
        if self.max_request_line_bytes > self.max_header_bytes:
            raise ConfigError(
                f"FLUXGATE_MAX_REQUEST_LINE_BYTES ({self.max_request_line_bytes}) must be at most "
                f"FLUXGATE_MAX_HEADER_BYTES ({self.max_header_bytes}): the line is part of the head"
            )
        if not self.lease_renew_deadline < self.lease_duration:
            raise ConfigError(
                f"FLUXGATE_LEASE_RENEW_DEADLINE ({self.lease_renew_deadline:g}) must be less than "
                f"FLUXGATE_LEASE_DURATION ({self.lease_duration}): a leader must stop writing before "
                "another replica may take the Lease"
            )
        if not self.lease_renew_deadline > 1.2 * self.lease_retry_period:
            raise ConfigError(
                f"FLUXGATE_LEASE_RETRY_PERIOD ({self.lease_retry_period:g}) must be less than "
                f"FLUXGATE_LEASE_RENEW_DEADLINE ({self.lease_renew_deadline:g}) / 1.2: a leader needs "
                "room for a retry (with jitter) before its deadline"
            )
        if bool(self.webhook_cert) != bool(self.webhook_key):
            given, missing = (("FLUXGATE_WEBHOOK_CERT", "FLUXGATE_WEBHOOK_KEY") if self.webhook_cert
                              else ("FLUXGATE_WEBHOOK_KEY", "FLUXGATE_WEBHOOK_CERT"))
            raise ConfigError(f"{given} is set but {missing} is not: the webhook needs both "
                              "(or neither: no webhook)")
        if self.otlp_endpoint:
            missing = _otel_missing()
            if missing:
                raise ConfigError(f"FLUXGATE_OTLP_ENDPOINT is set but {missing} not installed: install"
                                  " the otel extra (pip install 'fluxgate[otel]'), or unset it to trace nothing")
        if self.holdoff_max_ms < self.holdoff_ms:
            raise ConfigError(
                f"FLUXGATE_HOLDOFF_MAX_MS ({self.holdoff_max_ms}) must be at least "
                f"FLUXGATE_HOLDOFF_MS ({self.holdoff_ms})"
            )

    # --- derived values ----------------------------------------------------------

    @property
    def controller_lease_namespace(self) -> str:
        """FLUXGATE_LEASE_NAMESPACE, else the pod's namespace (in a cluster), else
        fluxgate-system."""
        if self.lease_namespace:
            return self.lease_namespace
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE) as f:
                found = f.read().strip()
        except OSError:
            found = ""
        return found or DEFAULT_LEASE_NAMESPACE

    @property
    def controller_identity(self) -> str:
        """FLUXGATE_POD_NAME, else hostname and pid (unique per process)."""
        import socket

        return self.pod_name or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def ingress_load_balancer(self) -> list[dict] | None:
        """``status.loadBalancer.ingress`` for accepted Ingresses (None: leave alone)."""
        if not self.ingress_status_address:
            return None
        try:
            ipaddress.ip_address(self.ingress_status_address)
            return [{"ip": self.ingress_status_address}]
        except ValueError:
            return [{"hostname": self.ingress_status_address}]

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def seat_count(self) -> int:
        """Ring entries and metrics regions: two per worker slot (control/supervisor.py)."""
        return 2 * self.worker_count

    @property
    def shard_name(self) -> str:
        """FLUXGATE_SHARD, or a stable name derived from the config path (file mode)
        or from what is watched (Kubernetes mode)."""
        if self.shard:
            return self.shard
        source = os.path.abspath(self.config) if self.config else "default"
        if self.kubernetes:
            source = "\0".join(("kubernetes", os.path.abspath(self.kubeconfig) if self.kubeconfig else "",
                                 self.gateway_class, ",".join(self.gateways),
                                 ",".join(self.watch_namespaces)))
        return "fg-" + hashlib.sha256(source.encode()).hexdigest()[:10]

    def worker_settings(self, index: int) -> WorkerSettings:
        # Every WorkerSettings field named like a setting takes its value.
        values = {name: getattr(self, name) for name in WorkerSettings.__struct_fields__ if name in _BY_NAME}
        per_worker = -(-self.max_connections // self.worker_count) if self.max_connections else 0
        values.update(
            shard=self.shard_name,
            index=index,
            seats=self.seat_count,
            heartbeat_interval=min(1.0, self.heartbeat_timeout / 4),
            max_connections_per_worker=min(self.max_connections_per_worker, per_worker or 1 << 30),
        )
        return WorkerSettings(**values)

    def to_builtins(self) -> dict:
        return dataclasses.asdict(self)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.metadata["setting"][0], f.default, *f.metadata["setting"][1:])
    for f in dataclasses.fields(Config)
)
_BY_NAME = {s.name: s for s in SETTINGS}


def _parse(s: Setting, raw: str, origin: str) -> Any:
    try:
        value = s.kind(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{origin}={raw!r}: {e}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{origin}={raw!r}: must be a finite number")
    if s.choices and value not in s.choices:
        raise ConfigError(f"{origin}={raw!r}: expected one of {', '.join(s.choices)}")
    if s.low is not None and value < s.low:
        raise ConfigError(f"{origin}={raw!r}: must be at least {s.low:g}")
    if s.high is not None and value > s.high:
        raise ConfigError(f"{origin}={raw!r}: must be at most {s.high:g}")
    return value


def add_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add a flag per setting (all, or ``names``); each takes raw text.

    A true/false setting's flag may stand alone (``--kubernetes`` is
    ``--kubernetes true``)."""
    for s in SETTINGS:
        if names is None or s.name in names:
            extra = dict(nargs="?", const="true") if s.kind is _bool else {}
            # argparse %-formats help strings: a literal "%" (as in "%2F") must be doubled.
            text = f"{s.help} [{s.env}, default {s.default!r}]".replace("%", "%%")
            parser.add_argument(s.flag, dest=s.name, default=None, metavar=s.env, help=text, **extra)


def flags_from(args: argparse.Namespace) -> dict[str, str | None]:
    return {s.name: getattr(args, s.name, None) for s in SETTINGS}
