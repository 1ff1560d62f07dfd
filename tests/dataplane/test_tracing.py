"""Tracing in the worker: trace context parsing and propagation, sampling, the export queue.

The Tracer is driven directly (``start`` on Requests made by the head reader,
``finish`` on exchanges) and through the protocol with fake transports (what
the upstream gets); spans go to a fake exporter, or through OpenTelemetry's
own encoder where their content is checked. The loopback tests with a real
collector are tests/e2e/test_tracing.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from dataplane.limits import Limits
from dataplane.metrics import Meter
from dataplane.request import HeadReader
from dataplane.tracing import Tracer, bound, valid
from shm import metrics as m
from shm import metrics as shm_metrics
from shm.schema import WorkerSettings
from tests.dataplane.test_protocol import OK, FakeTransport, FakeWorker
from tests.dataplane.tables import single
from dataplane.protocol import HttpProtocol
from dataplane.upstream.connection import UpstreamConnection

PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
SAMPLED_PARENT = f"00-{PARENT_ID}-{PARENT_SPAN}-01".encode()
UNSAMPLED_PARENT = f"00-{PARENT_ID}-{PARENT_SPAN}-00".encode()


class FakeExporter:
    def __init__(self, ok: bool = True, gate: threading.Event | None = None) -> None:
        self.ok = ok
        self.gate = gate  # set: the export may finish
        self.batches: list = []

    def export(self, batches) -> bool:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(batches)
        return self.ok

    def shutdown(self) -> None:
        pass

    def records(self) -> list[tuple]:
        return [r for batches in self.batches for records, _, _ in batches for r in records]


class FakeParser:
    def __init__(self, method=b"GET") -> None:
        self.method = method

    def get_method(self):
        return self.method

    def get_http_version(self):
        return "1.1"

    def should_keep_alive(self):
        return True

    def should_upgrade(self):
        return False


@pytest.fixture
def segment():
    seg = m.Segment(None, 1, create=False)
    yield seg


def tracer_for(segment, exporter=None, **kw) -> Tracer:
    loop = asyncio.new_event_loop()
    return Tracer(loop, Meter(segment.region(0)), exporter or FakeExporter(), **kw)


def read(tracer, *headers: tuple[bytes, bytes], url=b"/p"):
    reader = HeadReader(Limits(WorkerSettings(shard="t", index=0)), b"192.0.2.1", b"http", 8080, tracer)
    return reader, reader.read(FakeParser(), url, [(b"Host", b"example.com"), *headers], 0, False)


def upstream_lines(reader, req, name: bytes) -> list[bytes]:
    head = reader.upstream_head(req, b"")
    return [line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(name + b":")]


# --- the W3C format ------------------------------------------------------------------------


@pytest.mark.parametrize("value, ok", [
    (SAMPLED_PARENT, True),
    (UNSAMPLED_PARENT, True),
    (f"01-{PARENT_ID}-{PARENT_SPAN}-01".encode(), True),  # a later version: its first fields are read
    (f"01-{PARENT_ID}-{PARENT_SPAN}-01-future".encode(), True),
    (f"00-{PARENT_ID}-{PARENT_SPAN}-01-extra".encode(), False),  # version 00 is exactly 55 bytes
    (f"01-{PARENT_ID}-{PARENT_SPAN}-01extra".encode(), False),
    (f"ff-{PARENT_ID}-{PARENT_SPAN}-01".encode(), False),  # version ff is invalid
    (f"00-{PARENT_ID.upper()}-{PARENT_SPAN}-01".encode(), False),  # lower-case hex only
    (f"00-{'0' * 32}-{PARENT_SPAN}-01".encode(), False),  # all-zero trace id
    (f"00-{PARENT_ID}-{'0' * 16}-01".encode(), False),  # all-zero parent id
    (f"00-{PARENT_ID[:-1]}-{PARENT_SPAN}-01".encode(), False),
    (f"00-{PARENT_ID}-{PARENT_SPAN}-0".encode(), False),
    (f"00_{PARENT_ID}_{PARENT_SPAN}_01".encode(), False),
    (b"", False),
    (b"two traceparent headers", False),
])
def test_traceparent_validity_follows_w3c(value, ok):
    assert valid(value) is ok


def test_sampling_bound_is_the_ratio_of_the_trace_ids_low_64_bits():
    assert bound(0) == b"" and bound(1) == b"g"
    assert bound(0.5) == b"8000000000000000"
    assert bound(0.01) == b"%016x" % round(0.01 * 2 ** 64)
    for low in (b"0000000000000000", b"ffffffffffffffff"):
        assert low < bound(1) and not low < bound(0)


# --- per request: what the upstream gets --------------------------------------------------


def test_a_new_trace_gets_random_ids_and_the_ratio_decides(segment):
    tracer = tracer_for(segment, ratio=1.0)
    seen = set()
    for _ in range(2500):  # more than one pool of ids
        reader, req = read(tracer)
        value = req.traceparent
        assert valid(value) and value.endswith(b"-01") and req.sampled
        assert upstream_lines(reader, req, b"traceparent") == [value]
        seen.add(value[3:35])
        seen.add(value[36:52])
    assert len(seen) == 5000  # every trace id and span id different
    never = tracer_for(segment, ratio=0.0)
    for _ in range(200):
        reader, req = read(never)
        assert req.traceparent.endswith(b"-00") and not req.sampled and valid(req.traceparent)


def test_the_ratio_decides_by_the_trace_id_as_opentelemetry_does(segment):
    tracer = tracer_for(segment, ratio=0.25)
    sampled = 0
    for _ in range(20000):
        _, req = read(tracer)
        low = int(req.traceparent[19:35], 16)
        assert req.sampled == (low < round(0.25 * 2 ** 64))
        assert req.traceparent.endswith(b"-01" if req.sampled else b"-00")
        sampled += req.sampled
    assert 0.22 < sampled / 20000 < 0.28


def test_a_valid_parent_continues_its_trace_and_its_sampled_flag_decides(segment):
    for ratio in (0.0, 1.0):
        tracer = tracer_for(segment, ratio=ratio)
        reader, req = read(tracer, (b"traceparent", SAMPLED_PARENT), (b"tracestate", b"vendor=x,other=y"))
        value = req.traceparent
        assert value.startswith(f"00-{PARENT_ID}-".encode()) and value.endswith(b"-01") and req.sampled
        assert value[36:52] != PARENT_SPAN.encode()  # the gateway's own span is the upstream's parent
        assert upstream_lines(reader, req, b"traceparent") == [value]  # the client's is replaced, not added to
        assert upstream_lines(reader, req, b"tracestate") == [b"vendor=x,other=y"]
        reader, req = read(tracer, (b"traceparent", UNSAMPLED_PARENT))
        assert req.traceparent.startswith(f"00-{PARENT_ID}-".encode()) and req.traceparent.endswith(b"-00")
        assert not req.sampled
        assert req.trace_in == UNSAMPLED_PARENT  # kept: the span's parent, a repeat's context


@pytest.mark.parametrize("bad", [
    f"00-{PARENT_ID.upper()}-{PARENT_SPAN}-01".encode(), f"ff-{PARENT_ID}-{PARENT_SPAN}-01".encode(),
    f"00-{'0' * 32}-{PARENT_SPAN}-01".encode(), b"garbage",
])
def test_an_invalid_traceparent_is_replaced_by_a_new_trace(segment, bad):
    tracer = tracer_for(segment, ratio=1.0)
    reader, req = read(tracer, (b"traceparent", bad))
    (sent,) = upstream_lines(reader, req, b"traceparent")
    assert sent == req.traceparent and valid(sent) and sent[3:35] != PARENT_ID.encode()


def test_the_parents_sampled_flag_is_the_low_bit_of_its_flags(segment):
    tracer = tracer_for(segment, ratio=0.5)
    for flags in [f"{a}{b}" for a in "0f" for b in "0123456789abcdef"]:
        _, req = read(tracer, (b"traceparent", f"00-{PARENT_ID}-{PARENT_SPAN}-{flags}".encode()))
        assert req.sampled == bool(int(flags, 16) & 1), flags
        assert req.traceparent.endswith(b"-01" if req.sampled else b"-00")


def test_a_later_version_is_continued_as_version_00(segment):
    tracer = tracer_for(segment, ratio=0.0)
    for version in ("01", "10", "fe"):
        _, req = read(tracer, (b"traceparent", f"{version}-{PARENT_ID}-{PARENT_SPAN}-03-more".encode()))
        assert req.traceparent.startswith(f"00-{PARENT_ID}-".encode()) and req.traceparent.endswith(b"-01")
        assert valid(req.traceparent) and req.sampled


def test_two_traceparent_headers_are_not_one_context(segment):
    tracer = tracer_for(segment, ratio=0.0)
    reader, req = read(tracer, (b"traceparent", SAMPLED_PARENT), (b"traceparent", SAMPLED_PARENT))
    (sent,) = upstream_lines(reader, req, b"traceparent")
    assert sent[3:35] != PARENT_ID.encode() and not req.sampled


def test_with_tracing_off_traceparent_and_tracestate_pass_unchanged():
    for headers in ([(b"traceparent", b"whatever-the-client-sent"), (b"tracestate", b"a=1")],
                    [(b"traceparent", SAMPLED_PARENT)], []):
        reader, req = read(None, *headers)
        assert upstream_lines(reader, req, b"traceparent") == [v for n, v in headers if n == b"traceparent"]
        assert upstream_lines(reader, req, b"tracestate") == [v for n, v in headers if n == b"tracestate"]
        assert not req.sampled


# --- through the protocol: repeats, the span's record ---------------------------------------


@pytest.fixture
def traced(segment):
    worker = FakeWorker(single("up", endpoints=[("127.0.0.1", 9)]))
    exporter = FakeExporter()
    worker.tracer = Tracer(worker.loop, worker.meter, exporter, ratio=1.0)
    up = UpstreamConnection(worker.pool, ("127.0.0.1", 9), worker.outbox)
    up_t = FakeTransport(worker.outbox)
    up.connection_made(up_t)
    worker.pool.release(up)
    proto = HttpProtocol(worker, "l")
    down_t = FakeTransport(worker.outbox)
    proto.connection_made(down_t)
    yield proto, down_t, up, up_t, exporter
    worker.tracer.close()
    worker.loop.close()


def _sent_traceparents(data: bytes) -> list[bytes]:
    return [line.split(b": ", 1)[1] for line in data.split(b"\r\n") if line.lower().startswith(b"traceparent:")]


def test_every_request_and_every_repeat_of_its_bytes_gets_its_own_span(traced):
    proto, down, up, up_t, exporter = traced
    request = b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: probe\r\ntraceparent: " + SAMPLED_PARENT + b"\r\n\r\n"
    sent = []
    for _ in range(3):  # the second and third are repeats (protocol._repeat): the Request is reused
        proto.data_received(request)
        (value,) = _sent_traceparents(up_t.data())
        sent.append(value)
        up.data_received(OK)
        assert down.data().endswith(b"ok")
    assert len({v[36:52] for v in sent}) == 3 and {v[3:35] for v in sent} == {PARENT_ID.encode()}
    proto.worker.tracer.flush()
    proto.worker.tracer.close()
    records = exporter.records()
    assert [r[0] for r in records] == sent  # one span each, with what the upstream saw
    first = records[0]
    assert first[1] == SAMPLED_PARENT and first[5:8] == (b"GET", b"/a", b"http")
    assert first[11] == b"probe" and first[13] == 200 and first[16] == ("127.0.0.1", 9)


def test_a_request_the_gateway_answers_gets_a_span_too(traced):
    proto, down, up, up_t, exporter = traced
    proto.data_received(b"GET /a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n")  # escaped slashes: a 307 to /a/b
    out = down.data()
    assert out.startswith(b"HTTP/1.1 307 ") and up_t.data() == b""
    proto.worker.tracer.close()
    (record,) = exporter.records()
    assert record[13] == int(out[9:12]) and record[16] is None  # no upstream


# --- the export queue ---------------------------------------------------------------------------


def _finish(tracer, n: int) -> None:
    for _ in range(n):
        _, req = read(tracer)
        ex = SimpleNamespace(req=req, cluster=None, t0=time.perf_counter(), status=200, source="", gateway="",
                             endpoint=None, sent_at=0.0, rid=b"r", req_bytes=0)
        tracer.finish(ex, 0.001)


def _counts(segment) -> list[int]:
    records, _ = shm_metrics.read_all(segment)
    return records[(shm_metrics.TRACE, ())]


def test_a_full_queue_drops_spans_and_counts_them_while_the_exporter_is_stuck(segment):
    gate = threading.Event()
    exporter = FakeExporter(gate=gate)
    tracer = tracer_for(segment, exporter, ratio=1.0, queue_size=5)
    _finish(tracer, 3)
    tracer.flush()  # 3 go to the thread, which waits at the gate
    _finish(tracer, 4)
    tracer.flush()  # room for 2 of 4
    assert _counts(segment) == [0, 2, 0]
    _finish(tracer, 1)
    tracer.flush()  # no room
    assert _counts(segment) == [0, 3, 0]
    gate.set()
    tracer.close()
    assert _counts(segment) == [5, 3, 0]
    assert len(exporter.records()) == 5


def test_failed_exports_are_counted_as_dropped(segment):
    tracer = tracer_for(segment, FakeExporter(ok=False), ratio=1.0)
    _finish(tracer, 7)
    tracer.close()
    assert _counts(segment) == [0, 0, 7]


def test_a_batch_goes_to_the_exporter_on_its_own_after_the_flush_interval(segment, monkeypatch):
    import dataplane.tracing as tracing
    exporter = FakeExporter()
    loop = asyncio.new_event_loop()
    tracer = Tracer(loop, Meter(segment.region(0)), exporter, ratio=1.0)
    try:
        _finish(tracer, 2)
        loop.run_until_complete(asyncio.sleep(tracing.FLUSH_SECONDS + 0.1))
        deadline = time.monotonic() + 5
        while _counts(segment)[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _counts(segment) == [2, 0, 0]
    finally:
        tracer.close()
        loop.close()


# --- the OTLP span (OpenTelemetry's own encoder) ---------------------------------------------


def test_records_become_server_spans_with_the_semantic_convention_attributes(segment):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from dataplane.otlp import Exporter
    from tests.servers.otlp import decode

    settings = WorkerSettings(shard="s", index=1, otlp_endpoint="http://127.0.0.1:9/v1/traces")
    exporter = Exporter(settings)
    tracer = tracer_for(segment, ratio=1.0)
    _, req = read(tracer, (b"traceparent", SAMPLED_PARENT), (b"tracestate", b"vendor=x"),
                  (b"User-Agent", b"probe/2"), url=b"/shop/cart")
    t0 = time.perf_counter()
    ex = SimpleNamespace(req=req, cluster=SimpleNamespace(name="default/a:80"), t0=t0, status=503,
                         source="HTTPRoute/default/shop#0", gateway="default/gw", endpoint=("10.0.0.7", 8080),
                         sent_at=t0, rid=b"rid-1", req_bytes=12)
    tracer.finish(ex, 0.25)
    record = tracer.batch[0]
    span = exporter.span(record, time.time_ns(), time.perf_counter())
    (got,) = decode(encode_spans([span]).SerializeToString())
    assert got["trace_id"] == PARENT_ID and got["parent_span_id"] == PARENT_SPAN
    assert got["span_id"] == req.traceparent[36:52].decode() and got["trace_state"] == "vendor=x"
    assert got["kind"] == "SERVER" and got["status"] == "ERROR" and got["name"] == "GET default/shop"
    assert abs((got["end"] - got["start"]) / 1e9 - 0.25) < 1e-6
    assert got["attributes"] == {
        "http.request.method": "GET", "url.path": "/shop/cart", "url.scheme": "http",
        "network.protocol.version": "1.1",
        "client.address": "192.0.2.1", "network.peer.address": "192.0.2.1",
        "server.address": "example.com", "server.port": 8080, "user_agent.original": "probe/2",
        "http.response.status_code": 503, "http.request.body.size": 12,
        "fluxgate.route": "default/shop", "fluxgate.gateway": "default/gw", "fluxgate.backend": "default/a:80",
        "fluxgate.upstream.address": "10.0.0.7:8080", "fluxgate.request_id": "rid-1",
    }
    assert got["resource"]["service.name"] == "fluxgate" and got["resource"]["fluxgate.worker"] == 1
    assert got["scope"] == "fluxgate"
    exporter.shutdown()
