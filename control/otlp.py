"""The OTLP side of tracing: the tracer's span records become OpenTelemetry SDK
spans, sent by OpenTelemetry's OTLP/HTTP (protobuf) span exporter.

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

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
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
        for name in _NOISY:
            logging.getLogger(name).addFilter(_Seldom())

    def export(self, batches: list) -> bool:
        spans = [self.span(record, unix_ns, perf, worker)
                 for worker, unix_ns, perf, records in batches for record in records]
        return self._otlp.export(spans) == SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._otlp.shutdown()

    def span(self, record, unix_ns: int, perf: float, worker: int = 0) -> ReadableSpan:
        """One record of ``Tracer.finish`` (common/channel.py SPAN_FIELDS); ``unix_ns``
        and ``perf`` are one moment on both of the worker's clocks."""
        (value, parent_value, state, t0, seconds, method, path, scheme, host, port, client, user_agent, http10,
         status, source, gateway, endpoint, backend, request_id, body_bytes) = record
        trace_id = int(value[3:35], 16)
        context = SpanContext(trace_id, int(value[36:52], 16), False, _SAMPLED)
        parent = trace_state = None
        if len(parent_value) >= 55 and parent_value[3:35] == value[3:35]:  # continued the client's trace
            if state:
                trace_state = TraceState.from_header([state.decode("latin-1")])
            parent = SpanContext(trace_id, int(parent_value[36:52], 16), True,
                                 TraceFlags(int(parent_value[53:55], 16)), trace_state)
            if trace_state is not None:
                context = SpanContext(trace_id, context.span_id, False, _SAMPLED, trace_state)
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
        return ReadableSpan(
            name=f"{name} {route}" if name and route else name or "HTTP",
            context=context, parent=parent, resource=self.resource, attributes=attrs, kind=SpanKind.SERVER,
            status=_ERROR if status >= 500 else _UNSET, start_time=start, end_time=start + int(seconds * 1e9),
            instrumentation_scope=self.scope,
        )


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
