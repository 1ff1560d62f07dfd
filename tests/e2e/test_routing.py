"""Requests through real workers to real echo backends on loopback."""

from __future__ import annotations

import socket
from collections import Counter

from tests.e2e.gateway import echoed, objects, request, route, write_config



def _said(body: bytes) -> bytes:
    """An error body without its last line, the request id (each request has its own)."""
    lines = body.splitlines(keepends=True)
    assert lines and lines[-1].startswith(b"request id: ")
    return b"".join(lines[:-1])


def _gateway(tmp_path, gateway_factory, port, backends, routes, **kw):
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, backends, routes, **kw))
    return gateway_factory(cfg)


def test_routing_path_exact_and_prefix_pick_the_right_backend(tmp_path, gateway_factory, echo_factory, port):
    a, b, c = echo_factory("a"), echo_factory("b"), echo_factory("c")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port], "b": [b.port], "c": [c.port]}, [route("r", [
        {"matches": [{"path": {"type": "Exact", "value": "/api"}}], "backendRefs": [{"name": "a", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "b", "port": 80}]},
        {"backendRefs": [{"name": "c", "port": 80}]},
    ])])
    seen = {path: echoed(request(port, path)[2])["backend"]
            for path in ["/api", "/api/", "/api/x", "/apix", "/", "/other"]}
    assert seen == {"/api": "a", "/api/": "b", "/api/x": "b", "/apix": "c", "/": "c", "/other": "c"}


def test_routing_hostnames_select_routes_and_unknown_host_is_404(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port], "b": [b.port]}, [
        route("ra", [{"backendRefs": [{"name": "a", "port": 80}]}], hostnames=["a.example.com"]),
        route("rb", [{"backendRefs": [{"name": "b", "port": 80}]}], hostnames=["*.wild.example.com"]),
    ])
    assert echoed(request(port, host="a.example.com")[2])["backend"] == "a"
    assert echoed(request(port, host="A.Example.COM:80")[2])["backend"] == "a"
    assert echoed(request(port, host="x.wild.example.com")[2])["backend"] == "b"
    status, _, body = request(port, host="nothing.example.com")
    assert status == 404 and _said(body) == b"no route for this request\n"


def test_routing_weighted_backends_split_traffic_by_weight(tmp_path, gateway_factory, echo_factory, port):
    v1, v2 = echo_factory("v1"), echo_factory("v2")
    _gateway(tmp_path, gateway_factory, port, {"v1": [v1.port], "v2": [v2.port]}, [route("r", [
        {"backendRefs": [{"name": "v1", "port": 80, "weight": 90}, {"name": "v2", "port": 80, "weight": 10}]},
    ])])
    counts = Counter(echoed(request(port)[2])["backend"] for _ in range(600))
    # Binomial(600, 0.1): mean 60, sd ~7.3; 30..95 is beyond 4 sd either side.
    assert 30 <= counts["v2"] <= 95, counts
    assert counts["v1"] + counts["v2"] == 600


def test_routing_errors_are_500_503_502_with_short_bodies(tmp_path, gateway_factory, echo_factory, port):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    dead_port = dead.getsockname()[1]
    try:
        _gateway(tmp_path, gateway_factory, port, {"empty": [], "dead": [dead_port]}, [route("r", [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/missing"}}],
             "backendRefs": [{"name": "does-not-exist", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/empty"}}],
             "backendRefs": [{"name": "empty", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/dead"}}],
             "backendRefs": [{"name": "dead", "port": 80}]},
        ])])
        for path, status, said in (("/missing", 500, b"no backend can serve this route\n"),
                                   ("/empty", 503, b"no healthy upstream\n"), ("/dead", 502, b"upstream failed\n")):
            got, headers, body = request(port, path)
            assert (got, _said(body)) == (status, said)
            assert body.endswith(b"request id: %s\n" % headers["x-request-id"].encode())
    finally:
        dead.close()


def test_proxy_sets_forwarded_headers_and_strips_hop_by_hop(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port]}, [route("r", [{"backendRefs": [{"name": "a", "port": 80}]}])])
    status, headers, body = request(port, "/h?q=1", host="svc.example.com", headers={
        "X-Forwarded-For": "203.0.113.7", "Connection": "keep-alive, X-Secret", "X-Secret": "s",
        "Keep-Alive": "timeout=5", "TE": "trailers", "Proxy-Connection": "keep-alive", "X-Kept": "yes"})
    seen = {k.lower(): v for k, v in echoed(body)["headers"]}
    assert status == 200
    assert echoed(body)["url"] == "/h?q=1"
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "svc.example.com"
    assert seen["host"] == "svc.example.com"
    assert seen["x-kept"] == "yes"
    for hop in ("x-secret", "keep-alive", "te", "proxy-connection", "connection"):
        assert hop not in seen, hop
    assert "connection" not in headers or headers["connection"] != "close"


def test_proxy_streams_bodies_both_ways_with_length_and_chunked(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port]}, [route("r", [{"backendRefs": [{"name": "a", "port": 80}]}])])
    big = b"x" * 300_000
    status, _, body = request(port, "/upload", method="POST", body=big)
    assert status == 200 and echoed(body)["body_bytes"] == len(big)
    # A chunked request body, and a chunked response, over one raw connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nx-echo-chunks: 3\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        raw = _read_response(s)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert _dechunk(rest)["body"] == "hello world"


def test_proxy_keeps_alive_and_answers_pipelined_requests_in_order(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port]}, [route("r", [{"backendRefs": [{"name": "a", "port": 80}]}])])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # The first is slow upstream: the others must still come back in order.
        s.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\nx-echo-delay: 0.2\r\n\r\n"
                  b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /4 HTTP/1.1\r\nHost: x\r\n\r\n")
        urls = []
        for _ in range(4):
            raw = _read_response(s)
            body = raw.partition(b"\r\n\r\n")[2]
            urls.append(echoed(body)["url"])
    assert urls == ["/1", "/2", "/3", "/4"]


def test_proxy_head_request_gets_headers_only(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port]}, [route("r", [{"backendRefs": [{"name": "a", "port": 80}]}])])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _read_head(s)
        assert first.startswith(b"HTTP/1.1 200")
        second = _read_response(s)
    assert echoed(second.partition(b"\r\n\r\n")[2])["url"] == "/after"


# --- raw HTTP helpers ------------------------------------------------------------------


def _read_head(s: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(1)
        assert chunk, f"connection closed mid-head: {buf!r}"
        buf += chunk
    return buf


def _read_response(s: socket.socket) -> bytes:
    """One response with a Content-Length or chunked body, read exactly."""
    head = _read_head(s)
    lower = head.lower()
    body = b""
    if b"content-length:" in lower:
        n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < n:
            body += s.recv(n - len(body))
    elif b"transfer-encoding: chunked" in lower:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk
            body += chunk
    return head + body


def _dechunk(data: bytes) -> dict:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        n = int(size_line, 16)
        if n == 0:
            break
        out += data[:n]
        data = data[n + 2:]
    return echoed(out)


def test_proxy_streams_a_large_response_to_a_slow_reader_intact(tmp_path, gateway_factory, echo_factory, port):
    import http.client
    import time

    from tests.e2e.gateway import echo_pattern as pattern
    a = echo_factory("a")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port]}, [route("r", [{"backendRefs": [{"name": "a", "port": 80}]}])])
    size = 8 * 1024 * 1024
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/big", headers={"Host": "x", "x-echo-size": str(size)})
        resp = conn.getresponse()
        assert resp.status == 200 and int(resp.getheader("content-length")) == size
        got = bytearray()
        while True:
            chunk = resp.read(256 * 1024)
            if not chunk:
                break
            got += chunk
            time.sleep(0.005)  # a slow reader: the gateway must wait, not drop or buffer forever
        assert len(got) == size and bytes(got) == pattern(size)
        # The connection is still good for another request afterwards.
        conn.request("GET", "/again", headers={"Host": "x"})
        assert echoed(conn.getresponse().read())["url"] == "/again"
    finally:
        conn.close()


def test_routing_all_zero_weights_answer_500_and_zero_weight_backends_get_nothing(tmp_path, gateway_factory, echo_factory, port):
    a, b = echo_factory("a"), echo_factory("b")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port], "b": [b.port]}, [route("r", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/zero"}}],
         "backendRefs": [{"name": "a", "port": 80, "weight": 0}, {"name": "b", "port": 80, "weight": 0}]},
        {"backendRefs": [{"name": "a", "port": 80, "weight": 1}, {"name": "b", "port": 80, "weight": 0}]},
    ])])
    assert request(port, "/zero")[0] == 500
    assert {echoed(request(port, "/")[2])["backend"] for _ in range(30)} == {"a"}


def test_routing_unresolved_backend_fails_only_its_share(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port]}, [route("r", [
        {"backendRefs": [{"name": "a", "port": 80, "weight": 1}, {"name": "missing", "port": 80, "weight": 1}]},
    ])])
    statuses = Counter(request(port, "/")[0] for _ in range(400))
    assert set(statuses) == {200, 500}
    # Binomial(400, 0.5): mean 200, sd 10; 140..260 is 6 sd either side.
    assert 140 <= statuses[500] <= 260, statuses


def test_routing_backend_request_timeout_answers_504_for_a_slow_backend(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    _gateway(tmp_path, gateway_factory, port, {"a": [a.port]}, [route("r", [
        {"timeouts": {"request": "20s", "backendRequest": "300ms"}, "backendRefs": [{"name": "a", "port": 80}]}])])
    assert request(port, "/fast")[0] == 200
    status, _, body = request(port, "/slow", headers={"x-echo-delay": "5"})
    assert status == 504 and _said(body) == b"upstream timed out\n"
    assert request(port, "/fast-again")[0] == 200  # the next request is not affected


def test_routing_header_query_method_and_regex_matches(tmp_path, gateway_factory, echo_factory, port):
    names = ("hdr", "qry", "post", "rx", "rest")
    echoes = {n: echo_factory(n) for n in names}
    _gateway(tmp_path, gateway_factory, port, {n: [e.port] for n, e in echoes.items()}, [route("m", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                      "headers": [{"name": "X-Env", "value": "canary"}]}],
         "backendRefs": [{"name": "hdr", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                      "queryParams": [{"name": "v", "type": "RegularExpression", "value": "2|3"}]}],
         "backendRefs": [{"name": "qry", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/orders"}, "method": "POST"}],
         "backendRefs": [{"name": "post", "port": 80}]},
        {"matches": [{"path": {"type": "RegularExpression", "value": "/items/[0-9]+"}}],
         "backendRefs": [{"name": "rx", "port": 80}]},
        {"backendRefs": [{"name": "rest", "port": 80}]},
    ])])

    def to(path, **kw):
        return echoed(request(port, path, **kw)[2])["backend"]

    assert to("/anything", headers={"x-env": "canary"}) == "hdr"  # names are case-insensitive
    assert to("/anything", headers={"x-env": "prod"}) == "rest"
    assert to("/anything?v=3") == "qry" and to("/anything?v=4") == "rest"
    assert to("/orders", method="POST", body=b"{}") == "post" and to("/orders") == "rest"
    assert to("/items/42") == "rx" and to("/items/x") == "rest"
