"""control/otlp.py: spans encoded by FluxGate are the ones OpenTelemetry's encoder makes.

The export path encodes each record itself (``Exporter.encode``: a fifth of
the SDK's cost) and sends with the exporter's HTTP client; the public path
(the exporter's ``export(spans)``, used when that client is not there) makes
SDK spans. Both must put the same protobuf on the wire, and both must reach a
real OTLP/HTTP receiver (tests/servers/otlp.py).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from control.otlp import Exporter
from tests.servers.otlp import OTLPReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01".encode()
OURS = f"00-{TRACE}-b7ad6b7169203331-01".encode()
NEW = b"00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01"


def _settings(endpoint: str = "http://127.0.0.1:9/v1/traces", timeout: float = 5.0) -> SimpleNamespace:
    return SimpleNamespace(shard="s", otlp_endpoint=endpoint, otlp_timeout=timeout, trace_service_name="")


def _record(**over) -> tuple:
    fields = dict(traceparent=OURS, trace_in=PARENT, tracestate=b"vendor=x,other=y", t0=time.perf_counter() - 0.01,
                  seconds=0.0042, method=b"GET", path=b"/shop/cart", scheme=b"http", host=b"example.com:8443",
                  port=8080, client=b"192.0.2.1", user_agent=b"probe/2", http10=False, status=200,
                  source="HTTPRoute/default/shop#0", gateway="default/gw", endpoint=("10.0.0.7", 8080),
                  backend="default/a:80", request_id=b"rid-1", body_bytes=12)
    fields.update(over)
    return tuple(fields.values())  # common/channel.py SPAN_FIELDS order


def _ours(exporter: Exporter, records: list, unix_ns: int, perf: float) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.CopyFrom(exporter._template)
    for record in records:
        request.resource_spans[0].scope_spans[0].spans.add().ParseFromString(exporter.encode(record, unix_ns, perf, 3))
    return request


@pytest.fixture(scope="module")
def exporter():
    exporter = Exporter(_settings())
    yield exporter
    exporter.shutdown()


VARIANTS = {
    "continues a client's trace, with tracestate": {},
    "continues one without tracestate": {"tracestate": b""},
    "a new trace": {"traceparent": NEW, "trace_in": b"", "tracestate": b""},
    "an unknown method, no answer, no route": {"method": b"PURGE", "status": 0, "source": "", "endpoint": None,
                                              "backend": "", "request_id": b"", "user_agent": b""},
    "a 5xx on HTTP/1.0 with an IPv6 Host": {"status": 503, "http10": True, "host": b"[::1]:9000"},
    "a Host without a port": {"host": b"example.com", "body_bytes": 0},
}


@pytest.mark.parametrize("over", VARIANTS.values(), ids=VARIANTS.keys())
def test_encoded_span_is_what_the_sdk_encoder_makes(exporter, over):
    unix_ns, perf = time.time_ns(), time.perf_counter()
    record = _record(**over)
    sdk = encode_spans([exporter.span(record, unix_ns, perf, 3)])
    ours = _ours(exporter, [record], unix_ns, perf)
    assert ours == sdk
    assert ours.SerializeToString(deterministic=True) == sdk.SerializeToString(deterministic=True)


@settings(max_examples=150, deadline=None)
@given(path=st.binary(min_size=1, max_size=80), ua=st.binary(max_size=40), status=st.integers(0, 599),
       body=st.integers(0, 2**40), rid=st.binary(max_size=40))
def test_any_record_encodes_as_the_sdk_encodes_it(exporter, path, ua, status, body, rid):
    unix_ns, perf = time.time_ns(), time.perf_counter()
    records = [_record(path=path, user_agent=ua, status=status, body_bytes=body, request_id=rid),
               _record(path=path, user_agent=ua, status=status, body_bytes=body, request_id=rid)]  # cached now
    sdk = encode_spans([exporter.span(r, unix_ns, perf, 3) for r in records])
    assert _ours(exporter, records, unix_ns, perf) == sdk


@pytest.mark.parametrize("path", ["encoded here", "the exporter's export(spans)"])
def test_both_paths_deliver_the_same_spans_to_a_real_receiver(path):
    with OTLPReceiver() as otlp:
        exporter = Exporter(_settings(otlp.url + "/v1/traces"))
        if path != "encoded here":
            exporter._client = None  # as with an exporter without the client
        unix_ns, perf = time.time_ns(), time.perf_counter()
        batches = [(0, unix_ns, perf, [_record(), _record(traceparent=NEW, trace_in=b"")]),
                   (1, unix_ns, perf, [_record(status=502, request_id=b"rid-2")])]
        try:
            assert exporter.export(batches) is True
        finally:
            exporter.shutdown()
        spans = otlp.spans()
    assert len(spans) == 3
    assert [s["attributes"]["fluxgate.worker"] for s in spans] == [0, 0, 1]
    assert [s["trace_id"] for s in spans] == [TRACE, NEW[3:35].decode(), TRACE]
    assert spans[0]["parent_span_id"] == "00f067aa0ba902b7" and spans[0]["trace_state"] == "vendor=x,other=y"
    assert spans[2]["status"] == "ERROR" and spans[2]["attributes"]["fluxgate.request_id"] == "rid-2"
    assert all(s["resource"]["service.name"] == "fluxgate" and s["scope"] == "fluxgate" for s in spans)


def test_a_refused_export_says_so():
    with OTLPReceiver(status=503) as otlp:
        exporter = Exporter(_settings(otlp.url + "/v1/traces", timeout=1.0))  # 503 is retried until then
        try:
            assert exporter.export([(0, time.time_ns(), time.perf_counter(), [_record()])]) is False
        finally:
            exporter.shutdown()
