"""The downstream protocol and upstream connection, driven with fake transports.

No sockets: bytes go in through ``data_received`` and come out of the fake
transports' ``written``, so each test states exactly what crossed each hop.
"""

from __future__ import annotations

import asyncio

import pytest

from shm import metrics
from shm.schema import WorkerSettings

from dataplane.metrics import Meter
from dataplane.outbox import Outbox
from dataplane.protocol import HttpProtocol
from dataplane.router import Router
from dataplane.upstream.connection import UpstreamConnection
from dataplane.upstream.pool import Pool
from tests.dataplane.tables import single


class FakeTransport:
    """Records what reaches the socket. Reading it first flushes the worker's
    outbox, as the end of a loop iteration would."""

    def __init__(self, outbox, peer=("192.0.2.10", 40000)):
        self.outbox = outbox
        self.written: list[bytes] = []
        self._closed = self.aborted = self.paused = False
        self.peer = peer

    @property
    def closed(self):
        self.outbox.flush()
        return self._closed

    def write(self, data):
        assert not self._closed, "write after close"
        self.written.append(bytes(data))

    def data(self) -> bytes:
        self.outbox.flush()
        out = b"".join(self.written)
        self.written.clear()
        return out

    def get_extra_info(self, key):
        return self.peer if key == "peername" else None

    def is_closing(self):
        return self._closed

    def close(self):
        self._closed = True

    def abort(self):
        self.aborted = self._closed = True

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


class FakeWorker:
    def __init__(self, table):
        self.loop = asyncio.new_event_loop()
        self.pool = Pool(8, 60.0)
        self.connections = set()
        self.requests = 0
        self.draining = False
        self.shutting_down = False
        self.settings = WorkerSettings(shard="t", index=0)
        self.router = Router(table)
        self.outbox = Outbox(self.loop)
        self.meter = Meter(metrics.Segment(None, 1, create=False).region(0))
        self.access_log = None
        self.tracer = None  # dataplane/tracing.py's Tracer when a test turns tracing on

    @property
    def closing(self) -> bool:  # as dataplane/worker.py: draining, or the pod shutting down
        return self.draining or self.shutting_down


@pytest.fixture
def rig():
    worker = FakeWorker(single("up", endpoints=[("127.0.0.1", 9)]))
    up = UpstreamConnection(worker.pool, ("127.0.0.1", 9), worker.outbox)
    up_t = FakeTransport(worker.outbox)
    up.connection_made(up_t)
    worker.pool.release(up)
    proto = HttpProtocol(worker, "l")
    down_t = FakeTransport(worker.outbox)
    proto.connection_made(down_t)
    yield proto, down_t, up, up_t
    # A test may leave a connect task scheduled: cancel it before it runs.
    pending = asyncio.all_tasks(worker.loop)
    for task in pending:
        task.cancel()
    if pending:
        worker.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    worker.loop.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nServer: up\r\n\r\nok"


def test_protocol_forwards_request_without_hop_by_hop_and_with_forwarded_headers(rig):
    proto, down, up, up_t = rig
    proto.data_received(
        b"GET /p?q=1 HTTP/1.1\r\nHost: Example.com\r\nConnection: keep-alive, X-Drop\r\n"
        b"X-Drop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Keep: 2\r\n\r\n")
    sent = up_t.data()
    assert sent.startswith(b"GET /p?q=1 HTTP/1.1\r\nhost: Example.com\r\n")
    lower = sent.lower()
    for gone in (b"connection:", b"x-drop:", b"keep-alive:", b"te:"):
        assert gone not in lower, gone
    assert b"x-keep: 2\r\n" in lower
    assert b"x-forwarded-for: 10.0.0.1, 192.0.2.10\r\n" in lower
    assert b"x-forwarded-proto: http\r\n" in lower and b"x-forwarded-host: example.com\r\n" in lower


def test_protocol_relays_response_and_returns_connection_to_pool(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(OK)
    out = down.data()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nok")
    assert b"connection:" not in out.lower()  # keep-alive is implied for HTTP/1.1
    assert proto.worker.pool.acquire(("127.0.0.1", 9)) is up


def test_protocol_pipelined_requests_go_upstream_one_at_a_time_in_order(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert up_t.data().startswith(b"GET /1 ")  # /2 waits for /1's response
    up.data_received(OK)
    assert down.data().endswith(b"ok")
    assert up_t.data().startswith(b"GET /2 ")
    up.data_received(OK)
    assert down.data().endswith(b"ok")


def test_protocol_chunked_upstream_response_is_rechunked(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    up.data_received(b"2\r\nde\r\n0\r\n\r\n")
    out = down.data()
    assert b"transfer-encoding: chunked\r\n" in out.lower()
    assert out.endswith(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")


def test_protocol_close_delimited_upstream_body_ends_with_the_upstream_close(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello")
    up.connection_lost(None)
    out = down.data()
    assert out.endswith(b"5\r\nhello\r\n0\r\n\r\n")  # re-framed so the client sees the end
    assert not down.closed


def test_protocol_malformed_request_gets_400_and_close_and_nothing_upstream(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert up_t.data() == b""
    out = down.data()
    assert out.startswith(b"HTTP/1.1 400 ") and b"connection: close" in out
    assert down.closed


def test_protocol_missing_or_duplicate_host_is_400(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert down.data().startswith(b"HTTP/1.1 400 ")
    assert up_t.data() == b""


def test_protocol_upstream_garbage_is_502(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    assert down.data().startswith(b"HTTP/1.1 502 ")
    assert up_t.closed


def test_protocol_upstream_reset_mid_response_aborts_the_client_connection(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    up.connection_lost(ConnectionResetError())
    assert down.aborted  # a truncated body must never look complete


def test_protocol_request_body_streams_with_content_length(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
    first = up_t.data()
    assert first.lower().count(b"content-length: 10") == 1 and first.endswith(b"hello")
    proto.data_received(b"world")
    assert up_t.data() == b"world"


def test_protocol_chunked_request_body_is_rechunked_upstream(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    sent = up_t.data()
    assert b"transfer-encoding: chunked\r\n" in sent.lower()
    assert sent.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_protocol_head_response_is_headers_only_and_connection_not_reused(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    out = down.data()
    assert out.endswith(b"\r\n\r\n") and b"content-length: 100" in out.lower()
    assert up_t.closed


def test_protocol_http10_client_without_keepalive_gets_close(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    up.data_received(OK)
    out = down.data()
    assert b"connection: close" in out.lower()
    assert down.closed


def test_protocol_draining_worker_answers_with_connection_close(rig):
    proto, down, up, up_t = rig
    proto.worker.draining = True
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(OK)
    assert b"connection: close" in down.data().lower()
    assert down.closed


def test_protocol_no_route_is_404_and_keeps_the_connection(rig):
    proto, down, up, up_t = rig
    proto.listener = "other-listener"  # no table entry: nothing routes
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = down.data()
    assert out.startswith(b"HTTP/1.1 404 ") and b"connection: keep-alive" in out
    assert not down.closed


@pytest.mark.parametrize("upstream_head, kept, gone", [
    # the fast path: only a plain Connection line to cut
    (b"Server: up\r\nCONNECTION: Keep-Alive\r\nContent-Length: 2", [b"Server: up", b"Content-Length: 2"], [b"onnection"]),
    # the general path: nominated, hop-by-hop and look-alike names
    (b"Connection: close, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n"
     b"X-Connection-Id: 7\r\nTEST: yes\r\nContent-Length: 2",
     [b"X-Connection-Id: 7", b"TEST: yes", b"Content-Length: 2"],
     [b"X-Private", b"Keep-Alive", b"Upgrade", b"onnection: close"]),
])
def test_protocol_response_loses_hop_by_hop_headers_and_keeps_the_rest(rig, upstream_head, kept, gone):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\n" + upstream_head + b"\r\n\r\nok")
    out = down.data()
    head = out.split(b"\r\n\r\n")[0]
    for h in kept:
        assert h in head, h
    for h in gone:
        assert h not in head, h
    assert out.endswith(b"\r\n\r\nok")


def test_protocol_http10_upstream_status_line_is_spoken_as_http11(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"HTTP/1.0 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert down.data().startswith(b"HTTP/1.1 201 Created\r\n")


def test_protocol_slow_client_pauses_the_upstream_and_resumes_it(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
    proto.pause_writing()  # the client's socket buffer is full
    assert up_t.paused
    proto.resume_writing()
    assert not up_t.paused


def test_protocol_slow_upstream_pauses_reading_the_client_body(rig):
    proto, down, up, up_t = rig
    proto.data_received(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
    up.pause_writing()  # the upstream's socket buffer is full
    assert down.paused
    up.resume_writing()
    assert not down.paused


def test_protocol_body_before_upstream_connects_is_bounded(rig):
    proto, down, up, up_t = rig
    proto.worker.pool.acquire(("127.0.0.1", 9))  # no pooled connection: a connect is pending
    proto.data_received(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    proto.data_received(b"a" * 70000)  # more than the buffer limit
    assert down.paused
    ex = proto.active
    ex._attach(up)  # the connection arrives: the buffer is flushed, reading resumes
    assert not down.paused
    assert len(up_t.data()) > 70000


def test_protocol_http2_preface_is_told_http2_is_not_enabled(rig, caplog):
    proto, down, up, up_t = rig
    with caplog.at_level("INFO", logger="fluxgate.protocol"):
        proto.data_received(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    out = down.data()
    assert out.startswith(b"HTTP/1.1 505 ")
    assert out.endswith(b"\r\n\r\nHTTP/2 is not enabled on this listener\n")
    assert down.closed and up_t.data() == b""
    (record,) = [r for r in caplog.records if r.getMessage() == "request refused"]
    assert record.fields["error"] == "HTTP/2 is not enabled on this listener"
    assert "PRI" not in record.fields["error"]
