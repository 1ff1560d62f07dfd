"""One keep-alive connection to an upstream endpoint, driving a response parser.

The connection is the httptools parser's callback target. While an exchange
is attached, everything the parser yields is re-framed and written straight
to the downstream transport: no Task, no queue, no buffering of the body.
Writes produced by one ``data_received`` are joined and sent in one call.

Rules:
* ``exchange`` is set by ``attach`` and cleared exactly once, in ``_finish``
  (response complete) or ``connection_lost``/``abort`` (failure).
* A connection goes back to the pool only if the response was complete, the
  upstream allows keep-alive, and the whole request was sent.
* A HEAD response has no body but may carry Content-Length; httptools cannot
  be told to skip that body, so such a connection is closed, never re-used.
"""

from __future__ import annotations

import asyncio

import httptools

from dataplane import headers as hdr
from dataplane.headers import nominated

_NO_BODY_STATUS = frozenset({204, 304})
# Connection values that nominate no other header (the usual ones): skip the parse.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool, key: tuple[str, int]) -> None:
        # process
        self.pool = pool
        # connection
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.uses = 0
        self.idle_since = 0.0
        self._out: list[bytes] = []
        # response (reset in attach)
        self.exchange = None
        self._headers: list = []
        self._reason = b""
        self._chunked = False  # re-frame the body as chunked downstream
        self._until_close = False  # body ends when the upstream closes
        self._interim = False

    # --- lifecycle ------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def attach(self, exchange, data: bytes) -> None:
        """Start one request on this connection; ``data`` is its head (+ body so far)."""
        self.exchange = exchange
        self.uses += 1
        self._headers = []
        self._reason = b""
        self._chunked = self._until_close = self._interim = False
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        """The downstream went away mid-exchange: this connection's framing is lost."""
        self.exchange = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # --- reading --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # 101 Switching Protocols: tunnels come with the WebSocket work
        except httptools.HttpParserError as exc:
            ex = self.exchange
            self.exchange = None
            self.close()
            if ex is not None:
                ex.upstream_failed(self, f"invalid response from upstream: {exc}")
            return
        out = self._out
        if out:
            ex = self.exchange or self._pending_ex
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if ex is not None and not ex.dead:
                ex.proto.write(data)
        if self._pending_ex is not None:
            ex, self._pending_ex = self._pending_ex, None
            ex.response_done(self, self._pending_reuse)

    _pending_ex = None
    _pending_reuse = False

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True
            if not ex.http10:
                self._out.append(b"HTTP/1.1 %d %s\r\n\r\n" % (status, self._reason))
            self._headers = []
            self._reason = b""
            return
        head = [b"HTTP/1.1 %d %s\r\n" % (status, self._reason)]
        drop = None
        te = None
        length = False
        classes = hdr.response_class
        for name, value in self._headers:
            code = classes.get(name)
            if code is None:
                code = hdr.classify_response(name)
            if code == 0:  # hdr.PASS
                head.append(b"%s: %s\r\n" % (name, value))
            elif code == hdr.LENGTH:
                length = True
                head.append(b"%s: %s\r\n" % (name, value))
            elif code == hdr.CONNECTION:
                if value.lower() not in _PLAIN_CONNECTION:
                    drop = nominated(value) if drop is None else drop | nominated(value)
            elif code == hdr.TE:
                te = value
        if drop:
            head = [head[0]] + [
                line for line in head[1:] if line.split(b":", 1)[0].lower() not in drop
            ]
        bodiless = ex.head_only or status in _NO_BODY_STATUS
        if not bodiless:
            if te is not None:
                self._chunked = True
                head.append(b"transfer-encoding: chunked\r\n")
            elif not length:
                # Close-delimited upstream body: chunk it for HTTP/1.1 clients,
                # for HTTP/1.0 clients the downstream connection ends it.
                self._until_close = True
                if ex.http10:
                    ex.keep_alive = False
                else:
                    self._chunked = True
                    head.append(b"transfer-encoding: chunked\r\n")
        head.append(ex.connection_header())
        self._out.append(b"".join(head))
        ex.response_started = True
        if ex.head_only:
            self._finish(False)

    def on_body(self, body: bytes) -> None:
        if self.exchange is None:
            return
        if self._chunked:
            self._out.append(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self._out.append(body)

    def on_message_complete(self) -> None:
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
        was_closed = self.closed
        self.closed = True
        ex = self.exchange
        self.exchange = None
        if ex is None:
            if not was_closed:
                self.pool.discard(self)
            return
        if self._until_close and ex.response_started:
            # The close is the end of this body (RFC 9112 6.3, rule 8).
            tail = b"0\r\n\r\n" if self._chunked else b""
            if self._out or tail:
                ex.downstream_write(b"".join(self._out) + tail)
                self._out.clear()
            ex.response_done(self, False)
            return
        ex.upstream_failed(self, f"upstream closed the connection: {exc or 'EOF'}")
