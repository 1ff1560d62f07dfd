"""The OTLP side of tracing: the tracer's span records become OTLP spans, sent
by OpenTelemetry's OTLP/HTTP (protobuf) span exporter.

Each record is encoded here (``Exporter.encode``: protobuf messages of
opentelemetry-proto, each attribute encoded once per value and then looked
up) and the request goes out through the exporter's own HTTP client. The
SDK's route (an SDK span per record, then its encoder) took about 120 µs of
this process's CPU per span; this one about 25 µs to encode, about 50 µs
with the rest of an export (measured: tests/control/test_otlp.py's records). tests/control/test_otlp.py checks that both put the same
protobuf on the wire; the SDK's route is still taken when the exporter has
no such client (``span`` makes its spans).

The one module that imports OpenTelemetry (the ``fluxgate[otel]`` extra),
imported by the control process only when tracing is on (control/tracing.py),
and run only on its export thread. Workers never import it: their records
come over the channel (common/channel.py SPAN_FIELDS). The exporter's
own settings apply (``OTEL_EXPORTER_OTLP_TRACES_HEADERS``, ``..._CERTIFICATE``,
``..._COMPRESSION``); FLUXGATE_OTLP_ENDPOINT and FLUXGATE_OTLP_TIMEOUT (one
export, its retries included) are passed to it.

A span (kind SERVER, named "METHOD" or "METHOD namespace/route"), with the
stable HTTP semantic conventions: ``http.request.method`` (``_OTHER`` and
``http.request.method_original`` for an unknown one), ``url.path`` (normalised,
no query: queries carry tokens), ``url.scheme``, ``server.address`` and
``server.port`` (the Host's, else the listener's port), ``client.address`` and
``network.peer.address``, ``network.protocol.version``, ``user_agent.original``,
``http.response.status_code`` (none when the client left before any
response), ``http.request.body.size``; FluxGate's ``fluxgate.route`` and
``fluxgate.gateway`` (namespace/name), ``fluxgate.backend`` (the Service
``namespace/name:port``), ``fluxgate.upstream.address`` (the endpoint the
last attempt went to) and ``fluxgate.request_id``. Status ERROR on a 5xx.
The resource: ``service.name`` (FLUXGATE_TRACE_SERVICE_NAME, else
OTEL_SERVICE_NAME, else ``fluxgate``), ``service.version``, ``host.name``,
``process.pid`` (the control process's), ``fluxgate.shard``, and what
OTEL_RESOURCE_ATTRIBUTES adds; ``fluxgate.worker`` (the worker's seat,
control/supervisor.py) is a span attribute.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from importlib import metadata

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PBSpan, SpanFlags, Status as PBStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from shm.schema import route_label

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                                    "PATCH")}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)
_PB_ERROR, _PB_UNSET = PBStatus(code=PBStatus.STATUS_CODE_ERROR), PBStatus(code=PBStatus.STATUS_CODE_UNSET)
# The flags the SDK's encoder sets: "is the parent remote" is known; it is, when there is one.
_LOCAL_PARENT = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_REMOTE_PARENT = _LOCAL_PARENT | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_MAX_CACHED = 8192  # encoded attributes kept (a cache: cleared when full)
# The SDK and the exporter log each failure (a dead collector: one per batch,
# a bad tracestate: one per span): at most one line per logger per LOG_EVERY.
LOG_EVERY = 10.0
_NOISY = ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "opentelemetry.exporter.otlp.common.http",
          "opentelemetry.exporter.otlp.proto.http._common", "opentelemetry.trace.span")


def _version() -> str:
    try:
        return metadata.version("fluxgate")
    except metadata.PackageNotFoundError:
        return "unknown"


class _Seldom(logging.Filter):
    """Passes one record per LOG_EVERY seconds."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + LOG_EVERY
        return True


class _Resource(Resource):
    """A Resource that hashes once: the encoder groups spans by resource, hashing
    it per span (the SDK's hash serialises every attribute to JSON each time)."""

    def __init__(self, attributes, schema_url=None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class Exporter:
    """``export(batches)``: the workers' batches ((worker, unix ns, perf_counter, records) each) → one
    OTLP export. ``settings``: the Config (otlp_endpoint, otlp_timeout, trace_service_name, shard)."""

    def __init__(self, settings) -> None:
        version = _version()
        made = Resource.create({
            "service.name": settings.trace_service_name or os.environ.get("OTEL_SERVICE_NAME") or "fluxgate",
            "service.version": version,
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
            "fluxgate.shard": settings.shard,
        })
        self.resource = _Resource(made.attributes, made.schema_url)
        self.scope = InstrumentationScope("fluxgate", version)
        self._otlp = OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=settings.otlp_timeout)
        # The fast path: spans encoded here (``encode``) and the request sent by
        # the exporter's own HTTP client, so its settings (headers, TLS,
        # compression, retries within the timeout) still apply. The client is
        # not public API (opentelemetry-exporter-otlp-proto-http 1.4x has it):
        # without one that has ``export(bytes)``, the exporter's ``export(spans)``.
        client = getattr(self._otlp, "_client", None)
        self._client = client if callable(getattr(client, "export", None)) else None
        self._attrs: dict[tuple, bytes] = {}
        # The resource and scope as the SDK's encoder writes them: a request
        # with one span, the span taken out.
        self._template = encode_spans([ReadableSpan(name="template", context=SpanContext(1, 1, False, _SAMPLED),
                                                    resource=self.resource, instrumentation_scope=self.scope)])
        del self._template.resource_spans[0].scope_spans[0].spans[:]
        for name in _NOISY:
            logging.getLogger(name).addFilter(_Seldom())

    def export(self, batches: list) -> bool:
        if self._client is None:  # the exporter's public path: SDK spans, its encoder
            spans = [self.span(record, unix_ns, perf, worker)
                     for worker, unix_ns, perf, records in batches for record in records]
            return self._otlp.export(spans) == SpanExportResult.SUCCESS
        request = ExportTraceServiceRequest()
        request.CopyFrom(self._template)
        spans = request.resource_spans[0].scope_spans[0].spans
        for worker, unix_ns, perf, records in batches:
            for record in records:
                spans.add().ParseFromString(self.encode(record, unix_ns, perf, worker))
        return self._client.export(request.SerializePartialToString()).success

    def shutdown(self) -> None:
        self._otlp.shutdown()

    def span(self, record, unix_ns: int, perf: float, worker: int = 0) -> ReadableSpan:
        """One record of ``Tracer.finish`` (common/channel.py SPAN_FIELDS) as an SDK span;
        ``unix_ns`` and ``perf`` are one moment on both of the worker's clocks."""
        trace_id, span_id, parent_id, flags, trace_state, name, error, start, end, attrs = \
            _fields(record, unix_ns, perf, worker)
        context = SpanContext(trace_id, span_id, False, _SAMPLED, trace_state)
        parent = None if parent_id is None else SpanContext(trace_id, parent_id, True, TraceFlags(flags), trace_state)
        return ReadableSpan(
            name=name, context=context, parent=parent, resource=self.resource, attributes=attrs,
            kind=SpanKind.SERVER, status=_ERROR if error else _UNSET, start_time=start, end_time=end,
            instrumentation_scope=self.scope,
        )

    def encode(self, record, unix_ns: int, perf: float, worker: int = 0) -> bytes:
        """The record's span as OTLP protobuf bytes: what the SDK's encoder makes of
        ``span()`` (tests/control/test_otlp.py compares them), at a fifth of its cost."""
        trace_id, span_id, parent_id, _flags, trace_state, name, error, start, end, attrs = \
            _fields(record, unix_ns, perf, worker)
        cache = self._attrs
        if len(cache) > _MAX_CACHED:
            cache.clear()
        # What few spans differ in (name, kind, status, flags): encoded once per combination.
        shape = (name, error, parent_id is not None)
        tail = cache.get(shape)
        if tail is None:
            tail = cache[shape] = PBSpan(
                name=name, kind=PBSpan.SPAN_KIND_SERVER, status=_PB_ERROR if error else _PB_UNSET,
                flags=_REMOTE_PARENT if parent_id is not None else _LOCAL_PARENT).SerializePartialToString()
        head = PBSpan(
            trace_id=trace_id.to_bytes(16, "big"), span_id=span_id.to_bytes(8, "big"),
            trace_state=None if trace_state is None else ",".join(f"{k}={v}" for k, v in trace_state.items()),
            parent_span_id=None if parent_id is None else parent_id.to_bytes(8, "big"),
            start_time_unix_nano=start, end_time_unix_nano=end,
        ).SerializePartialToString()
        # A Span's encoding is the concatenation of its fields' (protobuf merges
        # them): each attribute is encoded once per value (by protobuf, as a
        # one-attribute Span) and then looked up. Only the request id differs
        # on every span; paths, clients and agents mostly repeat.
        parts = [head, tail]
        for item in attrs.items():
            encoded = cache.get(item)
            if encoded is None:
                key, value = item
                encoded = PBSpan(attributes=[KeyValue(key=key, value=AnyValue(string_value=value) if type(value) is str
                                                      else AnyValue(int_value=value))]).SerializePartialToString()
                if key != "fluxgate.request_id":
                    cache[item] = encoded
            parts.append(encoded)
        return b"".join(parts)


def _fields(record, unix_ns: int, perf: float, worker: int):
    """What a span says, from one record: (trace id, span id, parent span id or None, the
    parent's flags, TraceState or None, name, is an error, start ns, end ns, attributes)."""
    (value, parent_value, state, t0, seconds, method, path, scheme, host, port, client, user_agent, http10,
     status, source, gateway, endpoint, backend, request_id, body_bytes) = record
    trace_id = int(value[3:35], 16)
    parent_id = trace_state = None
    flags = 0
    if len(parent_value) >= 55 and parent_value[3:35] == value[3:35]:  # continued the client's trace
        if state:
            trace_state = TraceState.from_header([state.decode("latin-1")])
        parent_id, flags = int(parent_value[36:52], 16), int(parent_value[53:55], 16)
    start = unix_ns - int((perf - t0) * 1e9)
    name = _METHODS.get(method)
    attrs = {
        "http.request.method": name or "_OTHER",
        "url.path": path.decode("latin-1"),
        "url.scheme": scheme.decode("latin-1"),
        "network.protocol.version": "1.0" if http10 else "1.1",
        "client.address": client.decode("latin-1"),
        "network.peer.address": client.decode("latin-1"),
        "fluxgate.worker": worker,
    }
    if name is None:
        attrs["http.request.method_original"] = method.decode("latin-1")
    address, host_port = _authority(host.decode("latin-1"))
    if address:
        attrs["server.address"] = address
    attrs["server.port"] = host_port or port
    if user_agent:
        attrs["user_agent.original"] = user_agent.decode("latin-1")
    if status:
        attrs["http.response.status_code"] = status
    if body_bytes:
        attrs["http.request.body.size"] = body_bytes
    route = route_label(source)
    if route:
        attrs["fluxgate.route"] = route
    if gateway:
        attrs["fluxgate.gateway"] = gateway
    if backend:
        attrs["fluxgate.backend"] = backend
    if endpoint is not None:
        attrs["fluxgate.upstream.address"] = f"{endpoint[0]}:{endpoint[1]}"
    if request_id:
        attrs["fluxgate.request_id"] = request_id.decode("latin-1")
    name = f"{name} {route}" if name and route else name or "HTTP"
    return (trace_id, int(value[36:52], 16), parent_id, flags, trace_state, name, status >= 500, start,
            start + int(seconds * 1e9), attrs)


def _authority(host: str) -> tuple[str, int]:
    """A Host value → (address, port or 0)."""
    if host.startswith("["):
        end = host.find("]")
        address, rest = host[1:end], host[end + 1:]
    else:
        address, _, rest = host.partition(":")
        rest = ":" + rest if rest else ""
    port = rest[1:] if rest.startswith(":") else ""
    return address, int(port) if port.isdigit() else 0
