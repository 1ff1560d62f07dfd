"""The capture upstream: records every byte the gateway sends, parses it strictly.

A threaded socket server on 127.0.0.1 (a free port), in the test process.
Per connection it keeps the raw bytes and feeds them to its own strict
parser (``wire.RequestStream``, not httptools), and answers each complete
request with a fixed ``200`` framed by Content-Length, keeping the
connection alive. Bytes it cannot parse exactly are an *ambiguous* request
that left the gateway: they are recorded in ``errors`` and the connection is
closed. A test asks what arrived since its ``mark()``.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from dataclasses import dataclass

from tests.hardening.wire import Request, RequestStream

BODY = b"captured\n"
# One sequence for all captures (next() on a count is atomic under the GIL),
# so requests seen by different backends sort in arrival order.
_SEQ = itertools.count(1)


@dataclass
class Seen:
    """One complete request as the upstream parsed it."""

    seq: int
    backend: str
    conn: int
    request: Request


class Capture:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.seq = 0  # the last number this capture took from _SEQ
        self.requests: list[Seen] = []
        self.chunks: list[tuple[int, int, bytes]] = []  # (seq, conn, bytes)
        self.errors: list[tuple[int, int, str, bytes]] = []  # (seq, conn, error, raw so far)
        self.incomplete: list[tuple[int, int]] = []  # (seq, conn): closed mid-request
        self.last_activity = time.monotonic()
        self._conns: dict[int, socket.socket] = {}
        self._next_conn = 0
        self._stopped = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, name=f"capture-{name}", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                cid = self._next_conn
                self._next_conn += 1
                self._conns[cid] = sock
            threading.Thread(target=self._serve, args=(sock, cid), daemon=True).start()

    def _serve(self, sock: socket.socket, cid: int) -> None:
        stream = RequestStream()
        raw = b""
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                with self.lock:
                    self.last_activity = time.monotonic()
                    self.seq = next(_SEQ)
                    if not data:
                        if not stream.idle and stream.error is None:
                            self.incomplete.append((self.seq, cid))
                        return
                    raw += data
                    self.chunks.append((self.seq, cid, data))
                    done = stream.feed(data)
                    for req in done:
                        self.seq = next(_SEQ)
                        self.requests.append(Seen(self.seq, self.name, cid, req))
                    if stream.error is not None:
                        self.errors.append((self.seq, cid, stream.error, raw[-2000:]))
                        return
                for req in done:
                    head_only = req.method == b"HEAD"
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nx-capture: %s\r\n\r\n%s"
                        % (len(BODY), self.name.encode(), b"" if head_only else BODY))
        except OSError:
            pass
        finally:
            with self.lock:
                self._conns.pop(cid, None)
            try:
                sock.close()
            except OSError:
                pass

    # --- what the tests ask ---------------------------------------------------------

    def mark(self) -> int:
        with self.lock:
            self.seq = next(_SEQ)
            return self.seq

    def since(self, mark: int) -> tuple[list[Seen], bytes, list[str]]:
        """Requests, raw bytes and parse errors after ``mark``."""
        with self.lock:
            reqs = [s for s in self.requests if s.seq > mark]
            raw = b"".join(c for seq, _, c in self.chunks if seq > mark)
            errs = [f"{self.name} conn {cid}: {err}; bytes: {tail[-300:]!r}"
                    for seq, cid, err, tail in self.errors if seq > mark]
            return reqs, raw, errs

    def open_connections(self) -> int:
        with self.lock:
            return len(self._conns)

    def stop(self) -> None:
        self._stopped = True
        self.listener.close()
        with self.lock:
            conns = list(self._conns.values())
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class Captures:
    """Several named captures, asked together."""

    def __init__(self, names: list[str]) -> None:
        self.by_name = {n: Capture(n) for n in names}

    def __getitem__(self, name: str) -> Capture:
        return self.by_name[name]

    def mark(self) -> dict[str, int]:
        return {n: c.mark() for n, c in self.by_name.items()}

    def since(self, marks: dict[str, int]) -> tuple[list[Seen], bytes, list[str]]:
        reqs, raw, errs = [], b"", []
        for n, c in self.by_name.items():
            r, b, e = c.since(marks[n])
            reqs += r
            raw += b
            errs += e
        reqs.sort(key=lambda s: s.seq)
        return reqs, raw, errs

    def settle(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        """Wait until no capture has seen bytes for ``quiet`` seconds."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            last = max(c.last_activity for c in self.by_name.values())
            if time.monotonic() - last >= quiet:
                return
            time.sleep(quiet / 2)

    def stop(self) -> None:
        for c in self.by_name.values():
            c.stop()
