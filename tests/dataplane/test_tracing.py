"""Tracing in the worker: trace context parsing and propagation, sampling, span records to the channel.

The Tracer is driven directly (``start`` on Requests made by the head reader,
``finish`` on exchanges) and through the protocol with fake transports (what
the upstream gets); its messages go to a fake channel and are read back with
common/channel.py. The control process's export is tests/control/test_tracing.py;
the loopback tests with a real collector are tests/e2e/test_tracing.py.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from common import channel
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


class FakeChannel:
    """The worker's end of its channel: ``send`` keeps each message; ``full`` refuses them."""

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.messages: list[bytes] = []

    def send(self, message: bytes) -> int:
        if self.full:
            raise BlockingIOError
        assert len(message) <= channel.MAX_MESSAGE
        self.messages.append(message)
        return len(message)

    def records(self) -> list[list]:
        out = []
        for message in self.messages:
            assert message[:1] == channel.SPANS
            worker, unix_ns, perf, records = channel.parse_spans(message)
            assert len(records) == channel.span_count(message)
            out.extend(records)
        return out


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


def tracer_for(segment, chan=None, **kw) -> Tracer:
    loop = asyncio.new_event_loop()
    return Tracer(loop, Meter(segment.region(0)), (chan or FakeChannel()).send, **kw)


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
    chan = FakeChannel()
    worker.tracer = Tracer(worker.loop, worker.meter, chan.send, ratio=1.0)
    up = UpstreamConnection(worker.pool, ("127.0.0.1", 9), worker.outbox)
    up_t = FakeTransport(worker.outbox)
    up.connection_made(up_t)
    worker.pool.release(up)
    proto = HttpProtocol(worker, "l")
    down_t = FakeTransport(worker.outbox)
    proto.connection_made(down_t)
    yield proto, down_t, up, up_t, chan
    worker.tracer.close()
    worker.loop.close()


def _sent_traceparents(data: bytes) -> list[bytes]:
    return [line.split(b": ", 1)[1] for line in data.split(b"\r\n") if line.lower().startswith(b"traceparent:")]


def test_every_request_and_every_repeat_of_its_bytes_gets_its_own_span(traced):
    proto, down, up, up_t, chan = traced
    request = b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: probe\r\ntraceparent: " + SAMPLED_PARENT + b"\r\n\r\n"
    sent = []
    for _ in range(3):  # the second and third are repeats (protocol._repeat): the Request is reused
        proto.data_received(request)
        (value,) = _sent_traceparents(up_t.data())
        sent.append(value)
        up.data_received(OK)
        assert down.data().endswith(b"ok")
    assert len({v[36:52] for v in sent}) == 3 and {v[3:35] for v in sent} == {PARENT_ID.encode()}
    proto.worker.tracer.close()
    records = chan.records()
    assert [r[0] for r in records] == sent  # one span each, with what the upstream saw
    first = records[0]
    assert first[1] == SAMPLED_PARENT and first[5:8] == [b"GET", b"/a", b"http"]
    assert first[11] == b"probe" and first[13] == 200 and first[16] == ["127.0.0.1", 9]


def test_a_request_the_gateway_answers_gets_a_span_too(traced):
    proto, down, up, up_t, chan = traced
    proto.data_received(b"GET /a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n")  # escaped slashes: a 307 to /a/b
    out = down.data()
    assert out.startswith(b"HTTP/1.1 307 ") and up_t.data() == b""
    proto.worker.tracer.close()
    (record,) = chan.records()
    assert record[13] == int(out[9:12]) and record[16] is None  # no upstream


# --- the channel to the control process ---------------------------------------------------


def _finish(tracer, n: int, path: bytes = b"/p") -> None:
    for _ in range(n):
        _, req = read(tracer, url=path)
        ex = SimpleNamespace(req=req, cluster=None, t0=time.perf_counter(), status=200, source="", gateway="",
                             endpoint=None, sent_at=0.0, rid=b"r", req_bytes=0)
        tracer.finish(ex, 0.001)


def _dropped(segment) -> int:
    records, _ = shm_metrics.read_all(segment)
    return records[(shm_metrics.CONNECTIONS, ())][shm_metrics.SPANS_DROPPED]


def test_a_batch_of_max_batch_spans_goes_out_at_once_as_one_message(segment):
    import dataplane.tracing as tracing
    chan = FakeChannel()
    tracer = tracer_for(segment, chan, ratio=1.0, worker=3)
    _finish(tracer, tracing.MAX_BATCH - 1)
    assert chan.messages == []
    _finish(tracer, 1)
    assert len(chan.messages) == 1 and len(chan.records()) == tracing.MAX_BATCH
    worker, unix_ns, perf, _ = channel.parse_spans(chan.messages[0])
    assert worker == 3 and abs(unix_ns / 1e9 - time.time()) < 5 and abs(perf - time.perf_counter()) < 5


def test_a_full_channel_drops_the_batch_and_counts_it(segment):
    chan = FakeChannel(full=True)
    tracer = tracer_for(segment, chan, ratio=1.0)
    _finish(tracer, 3)
    tracer.flush()
    assert _dropped(segment) == 3 and chan.messages == []
    chan.full = False
    _finish(tracer, 2)
    tracer.flush()  # the channel takes messages again: nothing more is lost
    assert _dropped(segment) == 3 and len(chan.records()) == 2


def test_a_control_process_that_is_gone_loses_the_spans_not_the_worker(segment):
    def gone(message):
        raise BrokenPipeError
    tracer = Tracer(asyncio.new_event_loop(), Meter(segment.region(0)), gone, ratio=1.0)
    _finish(tracer, 4)
    tracer.close()
    assert _dropped(segment) == 4


def test_a_batch_too_large_for_one_message_goes_in_several(segment):
    import dataplane.tracing as tracing
    chan = FakeChannel()
    tracer = tracer_for(segment, chan, ratio=1.0)
    long_path = b"/" + b"x" * (tracing.MAX_TEXT * 2)
    _finish(tracer, 40, path=long_path)  # 40 paths of MAX_TEXT bytes: more than one message holds
    tracer.flush()
    records = chan.records()
    assert len(chan.messages) > 1 and len(records) == 40 and _dropped(segment) == 0
    assert {len(r[6]) for r in records} == {tracing.MAX_TEXT}  # the span's path is cut, never the request's


def test_a_batch_goes_out_on_its_own_after_the_flush_interval(segment):
    import dataplane.tracing as tracing
    chan = FakeChannel()
    loop = asyncio.new_event_loop()
    tracer = Tracer(loop, Meter(segment.region(0)), chan.send, ratio=1.0)
    try:
        _finish(tracer, 2)
        assert chan.messages == []
        loop.run_until_complete(asyncio.sleep(tracing.FLUSH_SECONDS + 0.1))
        assert len(chan.records()) == 2
    finally:
        loop.close()


# --- the OTLP span (OpenTelemetry's own encoder) ---------------------------------------------


def test_records_become_server_spans_with_the_semantic_convention_attributes(segment):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from control.otlp import Exporter
    from tests.servers.otlp import decode

    settings = SimpleNamespace(shard="s", otlp_endpoint="http://127.0.0.1:9/v1/traces", otlp_timeout=1.0,
                               trace_service_name="")
    exporter = Exporter(settings)
    chan = FakeChannel()
    tracer = tracer_for(segment, chan, ratio=1.0, worker=1)
    _, req = read(tracer, (b"traceparent", SAMPLED_PARENT), (b"tracestate", b"vendor=x"),
                  (b"User-Agent", b"probe/2"), url=b"/shop/cart")
    t0 = time.perf_counter()
    ex = SimpleNamespace(req=req, cluster=SimpleNamespace(name="default/a:80"), t0=t0, status=503,
                         source="HTTPRoute/default/shop#0", gateway="default/gw", endpoint=("10.0.0.7", 8080),
                         sent_at=t0, rid=b"rid-1", req_bytes=12)
    tracer.finish(ex, 0.25)
    tracer.flush()
    ((worker, unix_ns, perf, (record,)),) = [channel.parse_spans(m) for m in chan.messages]  # as control reads it
    span = exporter.span(record, unix_ns, perf, worker)
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
        "fluxgate.upstream.address": "10.0.0.7:8080", "fluxgate.request_id": "rid-1", "fluxgate.worker": 1,
    }
    assert got["resource"]["service.name"] == "fluxgate" and got["resource"]["fluxgate.shard"] == "s"
    assert got["scope"] == "fluxgate"
    exporter.shutdown()
