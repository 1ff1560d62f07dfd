"""WebSocket through real workers: a tunnel once the upstream answers 101, and only then."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading

import pytest

from tests.e2e.gateway import objects, route, write_config

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Upstream:
    """A loopback server in a thread: answers a WebSocket handshake with 101
    (or ``status``) and then echoes every byte; records each request head."""

    def __init__(self, status: int = 101, always_101: bool = False) -> None:
        self.status, self.always_101 = status, always_101
        self.heads: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            self.heads.append(head)
            key = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                        if line.lower().startswith(b"sec-websocket-key:")), b"")
            if self.status == 101 and (key or self.always_101):
                accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept + rest)
                while True:  # the tunnel: echo
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    conn.sendall(chunk)
            body = b"no upgrade here\n"
            status = 200 if self.status == 101 else self.status  # not a handshake: a plain answer
            conn.sendall(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def upstreams():
    made: list[Upstream] = []

    def make(**kw) -> Upstream:
        u = Upstream(**kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


def _config(path, port, ws, refusing, rogue, extra_routes=()):
    write_config(path, objects(port, {"ws": [ws.port], "refusing": [refusing.port], "rogue": [rogue.port]}, [
        route("ws", [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/chat"}}], "backendRefs": [{"name": "ws", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/refuse"}}],
             "backendRefs": [{"name": "refusing", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/rogue"}}],
             "backendRefs": [{"name": "rogue", "port": 80}]},
            *extra_routes,
        ]),
    ]))


def _handshake(port: int, path: str, early: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n%s"
              % (path.encode(), early))
    return s


def _read_head(s: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _read_exactly(s: socket.socket, n: int, have: bytes = b"") -> bytes:
    while len(have) < n:
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        have += chunk
    return have


@pytest.fixture
def setup(tmp_path, gateway_factory, port, upstreams):
    ws, refusing, rogue = upstreams(), upstreams(status=400), upstreams(always_101=True)
    cfg = tmp_path / "gw.yaml"
    _config(cfg, port, ws, refusing, rogue)
    gw = gateway_factory(cfg)
    return gw, cfg, ws, refusing, rogue


def test_websocket_tunnel_relays_both_ways_and_survives_a_table_swap(setup, port):
    gw, cfg, ws, refusing, rogue = setup
    s = _handshake(port, "/chat", early=b"early")
    with s:
        head, rest = _read_head(s)
        assert head.startswith(b"HTTP/1.1 101 ")
        lines = head.lower().split(b"\r\n")
        assert b"upgrade: websocket" in lines and b"connection: upgrade" in lines
        assert b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in lines
        assert _read_exactly(s, 5, rest) == b"early"  # sent before the 101, held until it came
        # The upstream saw the handshake with its upgrade headers.
        (up_head,) = ws.heads
        assert b"upgrade: websocket" in up_head.lower() and b"connection: upgrade" in up_head.lower()
        payload = bytes(range(256)) * 64
        s.sendall(payload)
        assert _read_exactly(s, len(payload)) == payload
        # A new table while the tunnel is open: it keeps going.
        generation = gw.debug_config()["generation"]
        _config(cfg, port, ws, refusing, rogue, extra_routes=[
            {"matches": [{"path": {"type": "Exact", "value": "/new"}}], "backendRefs": [{"name": "ws", "port": 80}]}])
        gw.wait_generation(generation + 1)
        s.sendall(b"after the swap")
        assert _read_exactly(s, 14) == b"after the swap"


def test_websocket_refused_by_the_upstream_is_an_ordinary_answer_then_close(setup, port):
    s = _handshake(port, "/refuse", early=b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    with s:
        head, rest = _read_head(s)
        assert head.startswith(b"HTTP/1.1 400 ") and b"connection: close" in head.lower()
        s.settimeout(5)
        while s.recv(65536):
            pass  # the gateway closes
    _, _, _, refusing, _ = setup
    assert all(b"/smuggled" not in h for h in refusing.heads)  # early bytes never went as HTTP


def test_a_101_the_request_did_not_ask_for_is_a_502(setup, port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    with s:
        s.sendall(b"GET /rogue HTTP/1.1\r\nHost: example.com\r\n\r\n")
        head, _ = _read_head(s)
        assert head.startswith(b"HTTP/1.1 502 ")


def test_an_upgrade_other_than_websocket_is_not_passed_on(setup, port):
    _, _, ws, _, _ = setup
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    with s:
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
        head, _ = _read_head(s)
        assert head.startswith(b"HTTP/1.1 200 ")
    assert all(b"upgrade" not in h.lower() for h in ws.heads)
