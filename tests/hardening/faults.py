"""Misbehaving upstreams for the fault tests, one behaviour per server.

Each ``FaultServer`` is a threaded socket server on 127.0.0.1 (a free port)
that reads one request head (and a Content-Length body) at a time, then lets
its behaviour answer: a function ``(sock, head) -> bool`` that returns True
to read the next request on the same connection. ``stop()`` closes the
listener and every connection; tests call it from a fixture finaliser.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class FaultServer:
    def __init__(self, name: str, behaviour) -> None:
        self.name = name
        self.behaviour = behaviour
        self.requests = 0  # heads read
        self.connections = 0  # accepted
        self.lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stopped = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, name=f"fault-{name}", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self._conns.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
                need = int(m.group(1)) if m else 0
                while len(buf) < need:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[need:]
                with self.lock:
                    self.requests += 1
                if not self.behaviour(sock, head):
                    return
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def stop(self) -> None:
        self._stopped = True
        self.listener.close()
        with self.lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.close()
            except OSError:
                pass


# --- behaviours -------------------------------------------------------------------


def healthy(sock, head) -> bool:
    sock.sendall(OK)
    return True


def reset_mid_response(sock, head) -> bool:
    """Promise 1000 bytes, send 100, then reset the connection (RST)."""
    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 100)
    time.sleep(0.05)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return False


def close_mid_chunked(sock, head) -> bool:
    """A chunked response that stops (FIN) before its last chunk."""
    sock.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    time.sleep(0.05)
    return False


def close_before_response(sock, head) -> bool:
    """Read the request, answer nothing, close."""
    return False


def garbage(sock, head) -> bool:
    sock.sendall(b"this is not http\r\n\r\n")
    return False


def response_cl_and_te(sock, head) -> bool:
    """Response smuggling: Content-Length and Transfer-Encoding together."""
    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"
                 b"0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled")
    return True


def response_extra_bytes(sock, head) -> bool:
    """More bytes than Content-Length says: they must never become a response."""
    sock.sendall(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled")
    return True


def response_bare_lf(sock, head) -> bool:
    sock.sendall(b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok")
    return True


def slow(delay: float):
    def behaviour(sock, head) -> bool:
        time.sleep(delay)
        sock.sendall(OK)
        return True
    return behaviour


def close_idle_after(seconds: float):
    """Answer keep-alive, then close the connection once idle ``seconds``."""
    def behaviour(sock, head) -> bool:
        sock.sendall(OK)
        sock.settimeout(seconds)
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            return False  # idle: close (FIN), as servers with a short keep-alive do
        finally:
            sock.settimeout(None)
        return bool(data)
    return behaviour
