"""Upstream faults and slow clients against real workers.

What a client must see (dataplane/exchange.py's failure rules, and issue 4):
* a refused endpoint is skipped for the next one: the client never notices;
* an upstream that dies or lies mid-response ends the client's connection,
  and never with something that looks like a complete response;
* garbage instead of a response is a 502; a slow upstream is a 504;
* a pooled connection the upstream closed, or that sent bytes nobody asked
  for, is never used for the next request;
* a client that sends too slowly, or not at all, is cut off by a deadline.

Deadlines asserted here are generous (seconds): they prove "eventually",
not speed.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.e2e.gateway import objects, route
from tests.hardening import faults
from tests.hardening.gateways import GatewayDown, GatewaySet
from tests.hardening.wire import connect, read_responses, send, wait_closed

KEEPALIVE = 1.0  # FLUXGATE_KEEPALIVE_TIMEOUT for these gateways
PROFILES = {
    "default": {"FLUXGATE_KEEPALIVE_TIMEOUT": "1"},
    "header-timeout": {"FLUXGATE_HEADER_TIMEOUT": "1"},
    "body-timeout": {"FLUXGATE_BODY_TIMEOUT": "1"},
    "upstream-response-timeout": {"FLUXGATE_UPSTREAM_RESPONSE_TIMEOUT": "0.5"},
    # One worker, so every connection counts against the same limit.
    "max-connections": {"FLUXGATE_WORKERS": "1", "FLUXGATE_MAX_CONNECTIONS_PER_WORKER": "2"},
}
BEHAVIOURS = {
    "ok": faults.healthy,
    "reset": faults.reset_mid_response,
    "chunkcut": faults.close_mid_chunked,
    "empty": faults.close_before_response,
    "garbage": faults.garbage,
    "clte": faults.response_cl_and_te,
    "barelf": faults.response_bare_lf,
    "extra": faults.response_extra_bytes,
    "slow": faults.slow(3.0),
    "slower": faults.slow(3.0),
    "idleclose": faults.close_idle_after(0.2),
}


@pytest.fixture(scope="module")
def servers():
    started = {name: faults.FaultServer(name, b) for name, b in BEHAVIOURS.items()}
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
    started["ok2"] = faults.FaultServer("ok2", faults.healthy)
    yield started, dead.getsockname()[1]
    for s in started.values():
        s.stop()
    dead.close()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, servers):
    by_name, dead_port = servers

    def make(port: int) -> list[dict]:
        names = [n for n in by_name if n != "ok2"]
        rules = [{"matches": [{"path": {"type": "PathPrefix", "value": f"/{n}"}}],
                  "backendRefs": [{"name": n, "port": 80}]} for n in names]
        rules.append({"matches": [{"path": {"type": "PathPrefix", "value": "/refused"}}],
                      "backendRefs": [{"name": "refused", "port": 80}]})
        for r in rules:
            if r["backendRefs"][0]["name"] == "slow":
                r["timeouts"] = {"request": "500ms"}
        docs = objects(port, {**{n: [s.port] for n, s in by_name.items() if n != "ok2"},
                              "refused": [by_name["ok2"].port]},
                       [route("faults", rules, hostnames=["example.com"])])
        # A second EndpointSlice for "refused": the same Service, a dead port.
        docs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "refused-dead", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "refused"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": dead_port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        })
        return docs

    gws = GatewaySet(tmp_path_factory.mktemp("faults-gw"), make, PROFILES)
    yield gws
    gws.stop()


def _port(gateways, profile: str = "default") -> int:
    try:
        return gateways.get(profile)[1]
    except GatewayDown as exc:
        pytest.fail(str(exc))


def _get(path: str, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nhost: example.com\r\n%s\r\n" % (path.encode(), extra)


# --- upstream faults ------------------------------------------------------------------


def test_upstream_connect_refused_fails_over_to_next_endpoint(gateways, servers):
    port = _port(gateways)
    healthy = servers[0]["ok2"]
    before = healthy.requests
    statuses = []
    for _ in range(20):
        with connect(port) as s:
            send(s, _get("/refused"))
            statuses += [r.status for r in read_responses(s, 1, 5.0).responses]
    assert statuses == [200] * 20
    assert healthy.requests - before == 20


def test_upstream_reset_mid_response_closes_client_connection(gateways):
    port = _port(gateways)
    with connect(port) as s:
        send(s, _get("/reset"))
        out = read_responses(s, 1, 5.0)
    # The head may have been relayed; the body is cut short and the connection ends.
    assert out.responses == [] and out.closed and not out.timed_out, out


def test_upstream_close_mid_chunked_response_never_looks_complete(gateways):
    port = _port(gateways)
    with connect(port) as s:
        send(s, _get("/chunkcut"))
        out = read_responses(s, 1, 5.0)
    assert out.responses == [] and out.closed and not out.timed_out, out
    assert b"0\r\n\r\n" not in out.leftover


@pytest.mark.parametrize("path", ["/garbage", "/barelf", "/clte", "/empty"])
def test_upstream_invalid_or_missing_response_is_502(gateways, path):
    """Not HTTP, bare-LF lines, CL with TE (response smuggling), or no answer: 502."""
    port = _port(gateways)
    with connect(port) as s:
        send(s, _get(path))
        out = read_responses(s, 1, 5.0)
    assert [r.status for r in out.responses] == [502], out
    assert b"smuggled" not in out.responses[0].body + out.leftover


def test_upstream_extra_bytes_after_response_are_never_relayed(gateways, servers):
    """Bytes after a complete response are no response: that connection is dropped.

    The upstream sends a second, unsolicited response right after the first;
    the next request must get its own answer, on a new upstream connection.
    """
    port = _port(gateways)
    server = servers[0]["extra"]
    conns = server.connections
    bodies = []
    for _ in range(3):
        with connect(port) as s:
            send(s, _get("/extra"))
            out = read_responses(s, 1, 5.0)
        bodies += [r.body for r in out.responses]
        time.sleep(0.1)
    assert bodies == [b"ok"] * 3
    assert server.connections - conns == 3, "a connection that sent unsolicited bytes was reused"


def test_upstream_closing_idle_pooled_connection_is_not_reused(gateways, servers):
    """The upstream closes idle keep-alive connections after 0.2 s: every later request still succeeds."""
    port = _port(gateways)
    statuses = []
    for _ in range(6):
        with connect(port) as s:
            send(s, _get("/idleclose"))
            statuses += [r.status for r in read_responses(s, 1, 5.0).responses]
        time.sleep(0.4)
    assert statuses == [200] * 6


def test_slow_upstream_is_504_after_route_timeout(gateways):
    port = _port(gateways)
    start = time.monotonic()
    with connect(port) as s:
        send(s, _get("/slow"))
        out = read_responses(s, 1, 10.0)
    assert [r.status for r in out.responses] == [504], out
    assert time.monotonic() - start < 2.5  # the route's 500 ms, not the upstream's 3 s


def test_slow_upstream_is_504_after_upstream_response_timeout(gateways):
    port = _port(gateways, "upstream-response-timeout")
    start = time.monotonic()
    with connect(port) as s:
        send(s, _get("/slower"))
        out = read_responses(s, 1, 10.0)
    assert [r.status for r in out.responses] == [504], out
    assert time.monotonic() - start < 2.5  # FLUXGATE_UPSTREAM_RESPONSE_TIMEOUT=0.5, not 3 s


# --- slow and idle clients -----------------------------------------------------------


def _dribble_until_closed(sock: socket.socket, data: bytes, interval: float, limit: float) -> float | None:
    """Send ``data`` a byte at a time; seconds until the gateway closed, or None."""
    start = time.monotonic()
    sock.settimeout(interval)
    i = 0
    while time.monotonic() - start < limit:
        if not send(sock, data[i % len(data):i % len(data) + 1]):
            return time.monotonic() - start
        i += 1
        try:
            got = sock.recv(4096)
            if not got or got.startswith(b"HTTP/1.1 408"):
                return time.monotonic() - start
        except socket.timeout:
            pass
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def test_slowloris_headers_are_cut_off_by_the_header_deadline(gateways):
    """FLUXGATE_HEADER_TIMEOUT=1: a head dribbled a byte every 0.1 s is cut off (408 or close)."""
    port = _port(gateways, "header-timeout")
    with connect(port) as s:
        send(s, b"GET / HTTP/1.1\r\nhost: example.com\r\n")
        took = _dribble_until_closed(s, b"x-slow: abcdefgh\r\n", 0.1, 6.0)
    assert took is not None and took < 4.0, took


def _bytes_sent_until_cut(sock: socket.socket, data: bytes, interval: float, prefix: bytes = b"",
                          pause: float = 0.0) -> int | None:
    """Send ``prefix`` at once, wait ``pause``, then ``data`` a byte every
    ``interval``; how many bytes of ``data`` went out before the gateway
    answered 408 or closed (None: it never did)."""
    if prefix:
        send(sock, prefix)
    time.sleep(pause)
    sock.settimeout(interval)
    for sent in range(len(data)):
        if not send(sock, data[sent:sent + 1]):
            return sent
        try:
            got = sock.recv(4096)
            if not got or got.startswith(b"HTTP/1.1 408"):
                return sent + 1
        except socket.timeout:
            pass
        except ConnectionResetError:
            return sent + 1
    return None


SLOW_HEAD = b"GET /slowly HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\nx-b: 2\r\n\r\n"


def test_head_deadline_counts_from_the_connection_start_not_from_the_target(gateways):
    """FLUXGATE_HEADER_TIMEOUT=1, a byte every 0.1 s from connect: cut at 1 s,
    about ten bytes in. Its clock once restarted at the target's first byte
    (0.4 s, after the method): then the cut came at 1.4 s or later."""
    port = _port(gateways, "header-timeout")
    with connect(port) as s:
        sent = _bytes_sent_until_cut(s, SLOW_HEAD, 0.1)
    assert sent is not None and sent <= 12, sent


def test_head_deadline_is_not_restarted_by_a_pause_after_the_method(gateways):
    """``GET `` at once, a 0.5 s pause, then a byte every 0.1 s: still cut 1 s
    after connect (about five bytes after the pause), not 1 s after it."""
    port = _port(gateways, "header-timeout")
    with connect(port) as s:
        sent = _bytes_sent_until_cut(s, SLOW_HEAD[4:], 0.1, prefix=SLOW_HEAD[:4], pause=0.5)
    assert sent is not None and sent <= 7, sent


def test_head_deadline_of_a_kept_alive_connection_starts_at_the_next_heads_first_byte(gateways):
    """After a first request and an idle pause, a second head dribbled a byte
    every 0.1 s is cut 1 s after its own first byte: neither at once (a clock
    from before the pause) nor 1 s after its target began (0.4 s later)."""
    port = _port(gateways, "header-timeout")
    with connect(port) as s:
        send(s, _get("/ok"))
        assert [r.status for r in read_responses(s, 1, 5.0).responses] == [200]
        sent = _bytes_sent_until_cut(s, SLOW_HEAD, 0.1, pause=0.6)
    assert sent is not None and 5 <= sent <= 12, sent


def test_connection_that_sends_nothing_is_closed_by_the_header_deadline(gateways):
    port = _port(gateways, "header-timeout")
    with connect(port) as s:
        closed, data = wait_closed(s, 4.0)
    assert closed, "an idle new connection was kept open"
    assert data in (b"",) or data.startswith(b"HTTP/1.1 408"), data


def test_slow_body_is_cut_off_when_idle(gateways, servers):
    """FLUXGATE_BODY_TIMEOUT=1: a body that stops arriving ends the connection; the upstream never gets it whole."""
    port = _port(gateways, "body-timeout")
    server = servers[0]["ok"]
    before = server.requests
    with connect(port) as s:
        send(s, b"POST /ok HTTP/1.1\r\nhost: example.com\r\ncontent-length: 100\r\n\r\n0123456789")
        closed, data = wait_closed(s, 4.0)
    assert closed, "a stalled body kept the connection open"
    assert data == b"" or data.startswith((b"HTTP/1.1 408", b"HTTP/1.1 400")), data
    assert server.requests == before  # the head may have gone upstream, never a complete request


def test_idle_keepalive_connection_is_closed(gateways):
    """FLUXGATE_KEEPALIVE_TIMEOUT=1: a kept-alive connection left idle is closed."""
    port = _port(gateways)
    with connect(port) as s:
        send(s, _get("/ok"))
        assert [r.status for r in read_responses(s, 1, 5.0).responses] == [200]
        start = time.monotonic()
        closed, data = wait_closed(s, KEEPALIVE + 4.0)
    assert closed and data == b"", data
    assert time.monotonic() - start >= KEEPALIVE * 0.5


def test_expect_100_continue_is_answered_before_the_body(gateways, servers):
    """A client that waits for 100 Continue gets it (from the gateway or relayed), then its 200."""
    port = _port(gateways)
    with connect(port) as s:
        send(s, b"POST /ok HTTP/1.1\r\nhost: example.com\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        s.settimeout(3.0)
        try:
            interim = s.recv(4096)
        except socket.timeout:
            interim = b""
        send(s, b"hello")
        out = read_responses(s, 1, 5.0)
    assert interim.startswith(b"HTTP/1.1 100 "), f"no 100 Continue within 3 s: {interim!r}"
    assert [r.status for r in out.responses] == [200], out


def test_connections_beyond_the_worker_limit_are_refused_until_one_closes(gateways):
    """FLUXGATE_MAX_CONNECTIONS_PER_WORKER=2 (one worker): a third connection is answered 503 and closed."""
    port = _port(gateways, "max-connections")
    held = []
    try:
        for _ in range(2):
            s = connect(port)
            held.append(s)
            send(s, _get("/ok"))
            assert [r.status for r in read_responses(s, 1, 5.0).responses] == [200]
        with connect(port) as extra:
            send(extra, _get("/ok"))
            out = read_responses(extra, 1, 5.0)
            if not out.closed:
                out.closed, _ = wait_closed(extra, 3.0)
        assert out.closed and [r.status for r in out.responses] in ([503], []), out
        held.pop().close()
        # Once one is gone (noticed within a moment), a new connection is served.
        deadline = time.monotonic() + 5.0
        while True:
            with connect(port) as again:
                send(again, _get("/ok"))
                statuses = [r.status for r in read_responses(again, 1, 5.0).responses]
            if statuses == [200] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert statuses == [200]
    finally:
        for s in held:
            s.close()
