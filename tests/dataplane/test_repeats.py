"""Repeats: a read that is byte for byte the last whole request, or a response head
byte for byte the last whole one, is served without parsing it again.

What must hold: it changes the cost, never the outcome. The property test
replays random traffic through two connections, one that may serve repeats
and one whose memory of the last read is wiped before every step, and
requires every byte each side sends to be the same.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.protocol import HttpProtocol
from dataplane.router import Router
from dataplane.upstream.connection import UpstreamConnection
from shm.schema import (
    Action, Cluster, Endpoint, HeaderValue, PathPrefix, RequestHeaderModifier, VirtualHost, WeightedCluster,
)
from tests.dataplane.tables import entry, single, table
from tests.dataplane.test_protocol import FakeTransport, FakeWorker

GET = b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 2\r\n\r\nok"
_RID = re.compile(rb"(?<=x-request-id: )[^\r]*|(?<=request id: )[^\n]*")  # headers and error bodies


class Rig:
    """A client connection and one pooled upstream connection, on fake transports."""

    def __init__(self, tbl=None, forget: bool = False) -> None:
        self.worker = FakeWorker(tbl or single("up", endpoints=[("127.0.0.1", 9)]))
        self.up = UpstreamConnection(self.worker.pool, ("127.0.0.1", 9), self.worker.outbox)
        self.up_t = FakeTransport(self.worker.outbox)
        self.up.connection_made(self.up_t)
        self.worker.pool.release(self.up)
        self.proto = HttpProtocol(self.worker, "l")
        self.down = FakeTransport(self.worker.outbox)
        self.proto.connection_made(self.down)
        self.forget = forget  # wipe the memory of the last reads before every step
        self.ids: list[bytes] = []

    def _wipe(self) -> None:
        if self.forget:
            self.proto._seen = None
            self.up._seen_head = None

    def client(self, data: bytes) -> bytes:
        """Send ``data`` from the client; what reached the upstream (request ids masked:
        each request has its own, ``ids`` collects them)."""
        self._wipe()
        if not self.down._closed:
            self.proto.data_received(data)
        return self._mask(self.up_t.data())

    def _mask(self, data: bytes) -> bytes:
        self.ids += _RID.findall(data)
        return _RID.sub(b"*", data)

    def upstream(self, data: bytes) -> bytes:
        """Send ``data`` from the upstream; what reached the client."""
        self._wipe()
        if not self.up.closed and self.up.exchange is not None:
            self.up.data_received(data)
        return self._mask(self.down.data())

    def state(self) -> tuple:
        return (self.down._closed, self.down.aborted, self.up.closed, self.worker.requests)

    def close(self) -> None:
        pending = asyncio.all_tasks(self.worker.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.worker.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.worker.loop.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def test_repeats_a_repeated_request_goes_upstream_exactly_as_the_first(rig):
    first = rig.client(GET)
    assert rig.proto._seen == GET  # remembered: one whole request in one read
    assert rig.upstream(OK).endswith(b"ok")
    assert rig.client(GET) == first
    assert rig.worker.requests == 2
    assert len(set(rig.ids)) == 2  # the same bytes, each request its own id (up and back)


def test_repeats_a_repeated_response_reaches_the_client_exactly_as_the_first(rig):
    rig.client(GET)
    first = rig.upstream(OK)
    assert rig.up._seen_head == OK[:-2]
    rig.client(GET)
    assert rig.upstream(OK) == first
    assert rig.worker.pool.acquire(("127.0.0.1", 9)) is rig.up  # back in the pool both times


def test_repeats_a_response_split_over_two_reads_is_parsed(rig):
    rig.client(GET)
    whole = rig.upstream(OK)
    rig.client(GET)
    # The remembered head, but not the remembered length: parsed, relayed the same.
    part = rig.upstream(OK[:-1])
    assert part.startswith(b"HTTP/1.1 200 OK\r\n")
    assert part + rig.upstream(OK[-1:]) == whole


def test_repeats_not_for_a_read_with_two_requests_or_part_of_one(rig):
    rig.client(GET + GET)
    assert rig.proto._seen is None
    rig.upstream(OK)
    rig.upstream(OK)
    rig.client(GET[:10])
    rig.client(GET[10:])
    assert rig.proto._seen is None


def test_repeats_not_for_a_route_whose_filters_edit_the_request():
    vh = VirtualHost("v", (entry(PathPrefix("/"), 0),), (Action(
        (WeightedCluster("up"),), filters=(RequestHeaderModifier(set=(HeaderValue("X-Seen", "1"),)),)),))
    r = Rig(table([vh], [Cluster("up", (Endpoint("127.0.0.1", 9),))]))
    try:
        assert b"X-Seen: 1\r\n" in r.client(GET)
        assert r.proto._seen is None  # a filter edits the Request: never shared
        r.upstream(OK)
        assert b"X-Seen: 1\r\n" in r.client(GET)
    finally:
        r.close()


def test_repeats_a_new_table_generation_routes_the_repeat_anew(rig):
    rig.client(GET)
    rig.upstream(OK)
    vh = VirtualHost("v", (entry(PathPrefix("/other"), 0),), (Action((WeightedCluster("up"),)),))
    rig.worker.router = Router(table([vh], [Cluster("up", (Endpoint("127.0.0.1", 9),))], generation=2))
    assert rig.client(GET) == b""  # /a has no route in generation 2
    assert rig.down.data().startswith(b"HTTP/1.1 404 ")


def test_repeats_a_draining_worker_parses_and_closes(rig):
    rig.client(GET)
    rig.upstream(OK)
    rig.worker.draining = True
    rig.client(GET)
    assert b"connection: close" in rig.upstream(OK).lower()
    assert rig.down.closed


# --- the property: the same bytes out, with or without repeats ---------------------------------

REQUESTS = [
    GET, GET, GET,
    b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /b?q=1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    b"GET /%2e%2e/a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: bad host\r\n\r\n",
    GET + GET,
    GET[:12],
]
RESPONSES = [
    OK, OK, OK,
    b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 204 No Content\r\nServer: up\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    OK[:20],
]
STEPS = st.lists(st.tuples(st.sampled_from(REQUESTS), st.lists(st.sampled_from(RESPONSES), max_size=2)),
                 min_size=1, max_size=12)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(steps=STEPS)
def test_repeats_never_change_a_byte_of_what_either_side_gets(steps):
    fast, slow = Rig(), Rig(forget=True)
    try:
        for request, responses in steps:
            assert fast.client(request) == slow.client(request)
            for response in responses:
                assert fast.upstream(response) == slow.upstream(response)
            assert fast.state() == slow.state()
    finally:
        fast.close()
        slow.close()
