"""One keep-alive connection to an upstream endpoint, driving a response parser.

The connection is the httptools parser's callback target. While an exchange
is attached, everything the parser yields is re-framed and handed to the
downstream transport: no Task, no per-request queue, no buffering of the
body beyond one loop iteration. Writes produced by one ``data_received`` are
joined into one, and go out through the worker's outbox.

Rules:
* ``exchange`` is set by ``attach`` and cleared exactly once, in ``_finish``
  (response complete) or ``connection_lost``/``abort`` (failure).
* It talks to its exchange only through the exchange's upstream interface
  (dataplane/exchange.py says which): a Mirror provides the same, so a
  connection cannot tell a client's exchange from a mirror's copy.
* A connection goes back to the pool only if the response was complete, the
  upstream allows keep-alive, and the whole request was sent.
* A HEAD response has no body but may carry Content-Length; httptools cannot
  be told to skip that body, so such a connection is closed, never re-used.

The response head is never taken apart header by header in Python: the
parser has no per-header callbacks here. It validates the head (llhttp
refuses bare LF, obs-fold, duplicate Content-Length, CL with TE, bad name
characters), and once it has, the head is cut from the bytes received since
the response began and edited as a block: one regex finds the hop-by-hop and
framing lines, which are sliced out. That keeps the cost of a response head
flat in the number of headers.

A repeated response (``_repeated``): upstreams answer the same resource with
the same head, byte for byte, until their Date header turns over. The last
head that arrived whole with its whole Content-Length body in one read, and
passed the parser, is kept; a read that is exactly that head and a body of
that length is relayed without parsing it again. Identical bytes in the
same parser state parse identically, so this changes the cost, never the
outcome (tests/dataplane/test_repeats.py replays traffic both ways).
"""

from __future__ import annotations

import asyncio
import re

import httptools

from dataplane.headers import nominated

_NO_BODY_STATUS = frozenset({204, 304})
# Connection values that nominate no other header (the usual ones): skip the parse.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
# A header line the proxy must not copy downstream (hop-by-hop, or framing it
# redoes itself), or must read (Content-Length). Matches "\r\nName: value".
# Case is spelled out per letter: sre's IGNORECASE path is ~40% slower here.
_SPECIAL_NAMES = (
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
    "proxy-authenticate", "proxy-authorization", "transfer-encoding", "content-length",
    "x-request-id",  # the gateway sends the request's own (an upstream's echo would repeat it)
)


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in word)


_SPECIAL_LINE = re.compile(
    ("\r\n(" + "|".join(_any_case(n) for n in _SPECIAL_NAMES) + "):[ \t]*([^\r\n]*)").encode()
)
# The fast path, for the usual head: delete a plain "Connection: keep-alive"
# or "close" line in C, then one search proves nothing else is special.
_PLAIN_CONNECTION_LINE = re.compile((
    "\r\n" + _any_case("connection") + ":[ \t]*(?:" + _any_case("keep-alive") + "|"
    + _any_case("close") + ")[ \t]*(?=\r\n)").encode())
# Searched in the lower-cased block: a literal alternation beats case classes.
_OTHER_SPECIAL = re.compile(
    rb"\r\n(?:connection:|keep-alive:|proxy-|te:|trailer:|upgrade:|transfer-encoding:|x-request-id:)")
_CONTENT_LENGTH = re.compile(("\r\n" + _any_case("content-length") + ":").encode())
# What most HTTP/1.1 servers (nginx among them) send, spelled as they spell it:
# removed with one C-level replace before any regex runs.
_CANONICAL_KEEPALIVE = b"\r\nConnection: keep-alive\r\n"
_KEEP = frozenset({b"content-length"})
# A response head (status line and headers, interim ones included) larger than
# this is refused (502): the same bound on what an upstream can make us buffer
# as FLUXGATE_MAX_HEADER_BYTES puts on clients, with room for big cookies.
MAX_RESPONSE_HEAD = 64 * 1024


class UpstreamConnection:
    def __init__(self, pool, key: tuple[str, int], outbox) -> None:
        # process
        self.pool = pool
        self.outbox = outbox  # all writes and graceful closes (dataplane/outbox.py)
        # connection
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.uses = 0
        self.idle_since = 0.0
        self._out: list[bytes] = []
        self._pending_ex = None  # the exchange whose response completed in this data_received
        self._pending_reuse = False
        # The last response that came whole in one read (head + Content-Length
        # body) as the parser validated it; see ``_repeated``.
        self._seen_head = None  # its head bytes, through the blank line
        self._seen_total = 0  # head and body bytes
        self._seen_line = self._seen_block = b""  # status line, header block (hop-by-hop cut)
        self._seen_status = 0
        self._seen_reuse = False
        self._candidate = None  # (head, line, block, status) of the response being parsed
        self._body_len = 0
        # response (reset in attach)
        self.exchange = None
        self._head: bytes | None = b""  # bytes since the response began; None once the head is out
        self._chunked = False  # re-frame the body as chunked downstream
        self._until_close = False  # body ends when the upstream closes
        self._interim = False
        self._switching = False  # a 101 head was relayed: a tunnel follows
        self.tunnel = False  # bytes are relayed untouched both ways (WebSocket)

    # --- lifecycle ------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport


    def attach(self, exchange, data: bytes) -> None:
        """Start one request on this connection; ``data`` is its head (+ body so far)."""
        self.exchange = exchange
        self.uses += 1
        self._head = b""
        self._chunked = self._until_close = self._interim = self._switching = False
        self.outbox.write(self.transport, data)

    def write(self, data: bytes) -> None:
        self.outbox.write(self.transport, data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.outbox.close(self.transport)

    def abort(self) -> None:
        """Close at once, the exchange detached: what is in flight here is void
        (the downstream went away, a timeout, a response discarded for a retry)."""
        self.exchange = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # --- reading --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            ex = self.exchange
            if ex is not None:
                ex.relay(data)
            return
        if self.exchange is None:
            # Bytes on an idle connection: the upstream broke the exchange
            # order (an extra response). It must never answer a later request.
            self.close()
            self.pool.discard(self)
            return
        fresh = self._head == b""  # this read starts a response
        if fresh and self._seen_head is not None and len(data) == self._seen_total \
                and data.startswith(self._seen_head) and self._repeated(data):
            return
        self._candidate = None
        self._body_len = 0
        if self._head is not None:
            self._head = data if not self._head else self._head + data
            if len(self._head) > MAX_RESPONSE_HEAD and self._head.find(b"\r\n\r\n", 0, MAX_RESPONSE_HEAD) < 0:
                self._failed(f"response head over {MAX_RESPONSE_HEAD} bytes")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0]:] if exc.args else b"")
            return
        except httptools.HttpParserError as exc:
            self._failed(f"invalid response from upstream: {exc}")
            return
        out = self._out
        if out:
            ex = self.exchange or self._pending_ex
            relayed = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if ex is not None:
                ex.relay(relayed)
        ex = self._pending_ex
        if ex is not None:
            self._pending_ex = None
            cand = self._candidate
            if fresh and cand is not None and len(cand[0]) + self._body_len == len(data):
                # The whole response was this read, and the parser passed it.
                self._seen_head, self._seen_line, self._seen_block, self._seen_status = cand
                self._seen_total = len(data)
                self._seen_reuse = self._pending_reuse
            ex.response_done(self, self._pending_reuse)

    def _repeated(self, data: bytes) -> bool:
        """Relay a response whose head is byte for byte the last one that came
        whole in one read, without parsing it again: the parser, in the same
        state (between responses), would find the same head, the same
        Content-Length and the same end. Only for an exchange with nothing to
        add to a head (no response filters, not HEAD, no retry on this status);
        False: parse it as usual."""
        ex = self.exchange
        retry = ex.retry
        if ex.responses or ex.head_only or ex.upgrade or (retry is not None and self._seen_status in retry.codes):
            return False
        self._head = None
        block = ex.response_head(self._seen_block, self._seen_status)
        ex.relay(self._seen_line + block + ex.connection_header() + data[len(self._seen_head):])
        self.exchange = None
        ex.response_done(self, self._seen_reuse)
        return True

    def _upgraded(self, rest: bytes) -> None:
        """The parser stopped after a 101: open the tunnel, or refuse a 101
        the request did not ask for."""
        ex = self.exchange
        if ex is None or not self._switching:
            self._failed("upstream switched protocols unasked")
            return
        self.tunnel = True
        head = b"".join(self._out)
        self._out.clear()
        ex.relay(head + rest if rest else head)
        ex.tunnel_open(self)

    def _failed(self, why: str) -> None:
        """The upstream broke the protocol: this connection is done, the exchange fails (502)."""
        ex = self.exchange
        self.exchange = None
        self.close()
        if ex is not None:
            ex.upstream_failed(self, why)

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            # A response nobody asked for (after a complete one, in the same
            # bytes): never reuse this connection, or it answers the next request.
            self._pending_reuse = False
            self.close()
            return
        buf = self._head
        end = buf.find(b"\r\n\r\n") + 4  # the parser accepted it: CRLF lines, so found
        status_end = buf.find(b"\r\n")
        status = self.parser.get_status_code()
        line = buf[:status_end]
        if line[5:8] != b"1.1":
            line = b"HTTP/1.1" + line[8:]  # we speak 1.1 downstream, whatever the upstream spoke
        if status == 101:
            if not ex.upgrade:
                self._failed("upstream switched protocols unasked")
                return
            # The handshake answer, hop-by-hop lines out, the upgrade ones back in.
            self._head = None
            self._switching = True
            block = self._edit_head(buf[status_end:end - 2])[0]
            self._out.append(line + block + b"connection: upgrade\r\nupgrade: websocket\r\n\r\n")
            ex.switching_protocols()
            return
        if 100 <= status < 200:
            # Interim (100 Continue, 103): relay to 1.1 clients, the final head follows.
            self._interim = True
            # HTTP/1.0 clients know no interim responses; a 100 the gateway
            # answered itself (Expect) is not sent twice.
            if not ex.http10 and not (status == 100 and ex.expect_continue):
                self._out.append(line + b"\r\n\r\n")
            self._head = buf[end:]
            return
        retry = ex.retry
        if retry is not None and status in retry.codes and ex.may_retry():
            # Nothing of it has gone downstream: drop it, and the connection
            # with its unread body, and try another endpoint.
            self._head = None
            self.abort()
            ex.retry_status(self, status)
            return
        self._head = None
        # The header block, "\r\nA: 1\r\nB: 2\r\n".
        block = buf[status_end:end - 2].replace(_CANONICAL_KEEPALIVE, b"\r\n", 1)
        special = _OTHER_SPECIAL.search(block.lower()) is not None
        if special:
            block = _PLAIN_CONNECTION_LINE.sub(b"", block)
            special = _OTHER_SPECIAL.search(block.lower()) is not None
        if not special:
            te = False
            # No Transfer-Encoding here, so a response the parser would keep
            # the connection after is Content-Length framed (or bodiless).
            length = self.parser.should_keep_alive() or _CONTENT_LENGTH.search(block) is not None
        else:
            block, length, te = self._edit_head(block)
        if length and not (te or ex.head_only or status in _NO_BODY_STATUS):
            self._candidate = (buf[:end], line, block, status)  # Content-Length framed: _repeated may serve it
        block = ex.response_head(block, status)  # the route's response filters run there
        framing = b""
        if not (ex.head_only or status in _NO_BODY_STATUS):
            if te:
                self._chunked = True
                framing = b"transfer-encoding: chunked\r\n"
            elif not length:
                # Close-delimited upstream body: chunk it for HTTP/1.1 clients,
                # for HTTP/1.0 clients the downstream connection ends it.
                self._until_close = True
                if ex.http10:
                    ex.end_by_close()
                else:
                    self._chunked = True
                    framing = b"transfer-encoding: chunked\r\n"
        # block ends with "\r\n"; the Connection header line (or a bare CRLF) ends the head.
        self._out.append(line + block + framing + ex.connection_header())
        if ex.head_only:
            self._finish(False)

    @staticmethod
    def _edit_head(block: bytes) -> tuple[bytes, bool, bool]:
        """The general case: cut every hop-by-hop line (and what Connection
        nominates) from the header block; say whether it has Content-Length
        and Transfer-Encoding."""
        length = te = False
        drop = None
        kept = []
        pos = 0
        for m in _SPECIAL_LINE.finditer(block):
            name = m.group(1).lower()
            if name in _KEEP:
                length = True
                continue
            kept.append(block[pos:m.start()])
            pos = m.end()
            if name == b"transfer-encoding":
                te = True
            elif name == b"connection" and m.group(2).lower() not in _PLAIN_CONNECTION:
                drop = nominated(m.group(2)) if drop is None else drop | nominated(m.group(2))
        if pos:
            kept.append(block[pos:])
            block = b"".join(kept)
        if drop:
            block = b"".join(
                seg for seg in re.split(rb"(?=\r\n)", block)
                if seg[2:].split(b":", 1)[0].strip().lower() not in drop
            )
        return block, length, te

    def on_body(self, body: bytes) -> None:
        if self.exchange is None:
            return
        self._body_len += len(body)
        if self._chunked:
            self._out.append(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self._out.append(body)

    def on_message_complete(self) -> None:
        if self._switching:
            return  # a 101 has no body: what follows is the tunnel
        if self._interim:
            self._interim = False
            return
        if self.exchange is None:
            return
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self._finish(self.parser.should_keep_alive() and not self._until_close)

    def _finish(self, reusable: bool) -> None:
        # Completion is reported after the joined writes are flushed (data_received).
        self._pending_ex = self.exchange
        self._pending_reuse = reusable
        self.exchange = None

    # --- flow control ---------------------------------------------------------

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_paused(True)

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_paused(False)

    # --- closing --------------------------------------------------------------

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc) -> None:
        try:
            self._lost(exc)
        finally:
            # The parser holds this connection (its callbacks): break the cycle so
            # a closed connection is freed at once, not at the worker's rare full GC.
            self.parser = None

    def _lost(self, exc) -> None:
        was_closed = self.closed
        self.closed = True
        ex = self.exchange
        self.exchange = None
        if self.tunnel:
            if ex is not None:
                ex.tunnel_closed()
            return
        if ex is None:
            if not was_closed:
                self.pool.discard(self)
            return
        if self._until_close:  # set once the head is out
            # The close is the end of this body (RFC 9112 6.3, rule 8).
            tail = b"0\r\n\r\n" if self._chunked else b""
            if self._out or tail:
                ex.relay(b"".join(self._out) + tail)
                self._out.clear()
            ex.response_done(self, False)
            return
        ex.upstream_failed(self, f"upstream closed the connection: {exc or 'EOF'}")
