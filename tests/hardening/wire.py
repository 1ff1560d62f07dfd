"""HTTP/1.1 on the wire, read strictly: the tests' own reference parsers.

Two parsers, neither shared with the gateway (which uses httptools):

* ``RequestStream`` - what an unambiguous request looks like (RFC 9112 with
  every MAY read the strict way). The capture upstream feeds it each
  connection's bytes; anything it cannot parse exactly is an *ambiguous*
  request that should never have left the gateway. The fuzz tests use it as
  the reference for what the client sent.
* ``read_responses`` - the client side: status lines, headers and bodies of
  what the gateway answered, and whether it then closed.

Rules kept by the request parser (any break is an ``Ambiguous`` error):
* lines end in CRLF (empty lines before a request line are skipped); no bare CR, no bare LF, no line folding (obs-fold);
* request-line is ``token SP target SP HTTP/1.x``: a single space each,
  the target visible ASCII (no CTL, SP, '#', '\\' or byte >= 0x80);
* a header is ``token ":" OWS value OWS`` with no CTL but HTAB in the value;
* at most one Content-Length (1*DIGIT, at most 18 digits), at most one
  Transfer-Encoding whose value is exactly ``chunked``, never both, and
  never Transfer-Encoding in HTTP/1.0;
* HTTP/1.1 has exactly one Host;
* chunk sizes are 1*HEXDIG (at most 16), extensions ``;token[=token|quoted]``,
  data followed by CRLF, trailers are header lines.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e])*"'
# Matched whole (fullmatch), but _VALUE_BAD, which is searched for.
TCHAR = re.compile(_TOKEN)
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_EXT = re.compile(rb"(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*")
MAX_HEAD = 1 << 20


class Ambiguous(ValueError):
    """Bytes that are not one clear HTTP/1.1 request."""


@dataclass
class Request:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]  # names as sent, values without OWS
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        """The value of ``name`` (joined with ", " if repeated), or None."""
        vals = [v for n, v in self.headers if n.lower() == name.lower().encode()]
        return b", ".join(vals) if vals else None

    @property
    def path(self) -> str:
        return self.target.decode("latin-1")


def _header_line(line: bytes) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise Ambiguous(f"obs-fold: {line[:40]!r}")
    name, sep, value = line.partition(b":")
    if not sep:
        raise Ambiguous(f"header without colon: {line[:40]!r}")
    if not TCHAR.fullmatch(name):
        raise Ambiguous(f"bad header name: {name[:40]!r}")
    if _VALUE_BAD.search(value):
        raise Ambiguous(f"control character in {name!r}: {value[:40]!r}")
    return name, value.strip(b" \t")


class RequestStream:
    """An incremental strict parser for one connection's request bytes."""

    def __init__(self, lenient_gaps: bool = False) -> None:
        self.lenient_gaps = lenient_gaps
        self.buf = b""
        self.requests: list[Request] = []
        self.error: str | None = None
        self._req: Request | None = None  # head parsed, body pending
        self._length = 0  # Content-Length still to read
        self._chunked = False

    @property
    def idle(self) -> bool:
        """No partial request is buffered (the stream ended cleanly here)."""
        return self._req is None and not self.buf

    def feed(self, data: bytes) -> list[Request]:
        """Parse what is complete; returns the requests completed by ``data``."""
        if self.error is not None:
            return []
        self.buf += data
        done = []
        try:
            while True:
                req = self._step()
                if req is None:
                    break
                self.requests.append(req)
                done.append(req)
        except Ambiguous as exc:
            self.error = str(exc)
        return done

    def _line(self, start: int = 0) -> int:
        """Index of the CRLF ending the line at ``start``, or -1 if incomplete."""
        buf = self.buf
        lf = buf.find(b"\n", start)
        if lf < 0:
            cr = buf.find(b"\r", start)
            if cr >= 0 and cr != len(buf) - 1:
                raise Ambiguous("bare CR")
            if len(buf) - start > MAX_HEAD:
                raise Ambiguous("line too long")
            return -1
        if lf == start or buf[lf - 1] != 13:
            raise Ambiguous("bare LF")
        if buf.find(b"\r", start, lf - 1) >= 0:
            raise Ambiguous("bare CR")
        return lf - 1

    def _step(self) -> Request | None:
        if self._req is None:
            return self._head()
        return self._chunk() if self._chunked else self._fixed()

    def _head(self) -> Request | None:
        # Empty lines before a request line are ignored (RFC 9112 2.2); the
        # lenient reference skips lone CR and LF there too, as llhttp does.
        skip = b"\r\n" if self.lenient_gaps else None
        while self.buf[:2] == b"\r\n" or (skip and self.buf[:1] and self.buf[:1] in skip):
            self.buf = self.buf[2:] if self.buf[:2] == b"\r\n" else self.buf[1:]
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            # Validate what has arrived, so an error shows before the end.
            pos = 0
            while True:
                e = self._line(pos)
                if e < 0:
                    return None
                pos = e + 2
        pos, lines = 0, []
        while pos < end + 2:
            e = self._line(pos)
            lines.append(self.buf[pos:e])
            pos = e + 2
        self.buf = self.buf[end + 4:]
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise Ambiguous(f"request line: {lines[0][:60]!r}")
        method, target, version = parts
        if not TCHAR.fullmatch(method):
            raise Ambiguous(f"method: {method[:20]!r}")
        if not _TARGET.fullmatch(target) or b"#" in target or b"\\" in target:
            raise Ambiguous(f"target: {target[:60]!r}")
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise Ambiguous(f"version: {version!r}")
        headers = [_header_line(line) for line in lines[1:]]
        req = Request(method, target, version, headers)
        lengths = [v for n, v in headers if n.lower() == b"content-length"]
        codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
        hosts = [v for n, v in headers if n.lower() == b"host"]
        if version == b"HTTP/1.1" and len(hosts) != 1:
            raise Ambiguous(f"{len(hosts)} Host headers")
        if len(lengths) > 1 or len(codings) > 1 or (lengths and codings):
            raise Ambiguous("conflicting framing headers")
        if codings:
            if version != b"HTTP/1.1" or codings[0].lower() != b"chunked":
                raise Ambiguous(f"transfer-encoding {codings[0]!r} in {version!r}")
            self._chunked, self._req = True, req
            return self._step()
        if lengths:
            if not re.fullmatch(rb"[0-9]{1,18}", lengths[0]):
                raise Ambiguous(f"content-length {lengths[0]!r}")
            self._length = int(lengths[0])
        else:
            self._length = 0
        self._chunked, self._req = False, req
        return self._step()

    def _fixed(self) -> Request | None:
        if len(self.buf) < self._length:
            return None
        req, self._req = self._req, None
        req.body, self.buf = self.buf[:self._length], self.buf[self._length:]
        return req

    def _chunk(self) -> Request | None:
        req = self._req
        while True:
            e = self._line()
            if e < 0:
                return None
            line = self.buf[:e]
            size_text, sep, ext = line.partition(b";")
            if not _HEX.fullmatch(size_text) or not _EXT.fullmatch(sep + ext):
                raise Ambiguous(f"chunk size line: {line[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                # Trailers, then the empty line.
                pos, trailers = e + 2, []
                while True:
                    te = self._line(pos)
                    if te < 0:
                        return None
                    if te == pos:
                        break
                    trailers.append(_header_line(self.buf[pos:te]))
                    pos = te + 2
                self.buf = self.buf[pos + 2:]
                req.trailers = trailers
                self._req = None
                return req
            if len(self.buf) < e + 2 + size + 2:
                return None
            data = self.buf[e + 2:e + 2 + size]
            if self.buf[e + 2 + size:e + 4 + size] != b"\r\n":
                raise Ambiguous("chunk data not followed by CRLF")
            req.body += data
            self.buf = self.buf[e + 4 + size:]


def parse_requests(data: bytes) -> tuple[list[Request], str | None, bool]:
    """All requests in ``data``: (complete ones, the first error, ends mid-request).

    The reference for what a client sent: strict, except that stray CR/LF
    bytes between requests are skipped (harmless, and what llhttp does).
    """
    s = RequestStream(lenient_gaps=True)
    s.feed(data)
    return s.requests, s.error, not s.idle


# --- responses (client side) ---------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    interim: list[int]  # 1xx statuses that came before it

    def header(self, name: str) -> bytes | None:
        vals = [v for n, v in self.headers if n.lower() == name.lower().encode()]
        return b", ".join(vals) if vals else None


@dataclass
class Outcome:
    responses: list[Response]
    closed: bool  # the gateway closed (EOF or reset) after them
    reset: bool = False
    leftover: bytes = b""  # bytes that were not a complete response
    timed_out: bool = False
    error: str | None = None  # the response bytes themselves did not parse


class _Reader:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline, self.buf = sock, deadline, b""
        self.eof = self.reset = self.timed_out = False

    def more(self) -> bool:
        if self.eof:
            return False
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            self.timed_out = True
            return False
        except (ConnectionResetError, BrokenPipeError):
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def until(self, marker: bytes) -> int:
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                return i
            if not self.more():
                return -1

    def take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self.more():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _one_response(r: _Reader, head_only: bool) -> Response | None:
    interim = []
    while True:
        end = r.until(b"\r\n\r\n")
        if end < 0:
            return None
        head, r.buf = r.buf[:end], r.buf[end + 4:]
        lines = head.split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.[01] (\d{3})(?: .*)?", lines[0])
        if m is None:
            raise ValueError(f"bad status line {lines[0][:80]!r}")
        status = int(m.group(1))
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ValueError(f"bad response header {line[:80]!r}")
            headers.append((name, value.strip()))
        if 100 <= status < 200:
            interim.append(status)
            continue
        break
    resp = Response(status, headers, b"", interim)
    if head_only or status in (204, 304):
        return resp
    te, cl = resp.header("transfer-encoding"), resp.header("content-length")
    if te is not None:
        if te.lower() != b"chunked":
            raise ValueError(f"response transfer-encoding {te!r}")
        body = b""
        while True:
            e = r.until(b"\r\n")
            if e < 0:
                return None
            size = int(r.buf[:e].split(b";")[0], 16)
            r.buf = r.buf[e + 2:]
            if size == 0:
                if r.until(b"\r\n") < 0:  # no trailers from the gateway
                    return None
                r.buf = r.buf[2:]
                resp.body = body
                return resp
            data = r.take(size + 2)
            if data is None:
                return None
            body += data[:-2]
    if cl is not None:
        data = r.take(int(cl))
        if data is None:
            return None
        resp.body = data
        return resp
    while r.more():  # close-delimited
        pass
    resp.body, r.buf = r.buf, b""
    return resp if r.eof else None


def read_responses(sock: socket.socket, count: int, timeout: float = 3.0,
                   close_wait: float = 0.0, head_only: bool = False) -> Outcome:
    """Read up to ``count`` final responses within ``timeout``; then, if
    ``close_wait``, wait that long for the connection to close."""
    r = _Reader(sock, time.monotonic() + timeout)
    out = Outcome([], False)
    try:
        while len(out.responses) < count:
            resp = _one_response(r, head_only)
            if resp is None:
                break
            out.responses.append(resp)
    except (ValueError, IndexError) as exc:
        out.error = str(exc)
    if close_wait and not r.eof and not r.timed_out and out.error is None:
        r.deadline = time.monotonic() + close_wait
        while r.more():
            pass
    out.closed, out.reset, out.timed_out = r.eof, r.reset, r.timed_out
    out.leftover = r.buf
    return out


def wait_closed(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Wait up to ``timeout`` for EOF or a reset: (closed, bytes that came first)."""
    r = _Reader(sock, time.monotonic() + timeout)
    while r.more():
        pass
    return r.eof, r.buf


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send(sock: socket.socket, data: bytes) -> bool:
    """Send all of ``data``; False if the gateway closed first."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def exchange(port: int, data: bytes, count: int = 1, timeout: float = 3.0,
             close_wait: float = 0.0) -> Outcome:
    """Send ``data`` on a new connection and read up to ``count`` responses."""
    with connect(port) as s:
        send(s, data)
        return read_responses(s, count, timeout, close_wait)
