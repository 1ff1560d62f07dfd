"""A small echo backend: answers every request with JSON describing it.

Used by ``fluxgate demo`` (the v1/v2 canary backends) and by the tests, which
need a real upstream on loopback that reports exactly what it received.
Request headers steer it (for tests): ``x-echo-delay: SECONDS`` answers late,
``x-echo-status: CODE`` picks the status, ``x-echo-chunks: N`` sends the body
chunked in N pieces, ``x-echo-close: 1`` closes after answering,
``x-echo-size: N`` answers N bytes of a known pattern instead of the report.
``GET /__echo/requests`` answers the reports of the last requests received
(a mirror target in tests is asked what reached it this way).
A whole backend can be made to misbehave for fault and retry tests:
``--status CODE`` answers that status by default, ``--delay SECONDS`` answers
every request late, ``--reset`` closes each connection without answering.
Run: ``python examples/echo.py --port 0 --name v1`` (prints "listening PORT").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import httptools

RECEIVED: list[dict] = []  # the last reports, newest last
KEEP = 1000


class EchoProtocol(asyncio.Protocol):
    def __init__(self, name: str, status: int = 200, delay: float = 0.0, reset: bool = False) -> None:
        self.name = name
        self.status = status
        self.delay = delay
        self.reset = reset
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[list[str]] = []
        self.body = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append([name.decode("latin-1"), value.decode("latin-1")])

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        report = {
            "backend": self.name,
            "method": self.parser.get_method().decode(),
            "url": self.url.decode("latin-1"),
            "headers": self.headers,
            "body_bytes": len(self.body),
            "body": self.body[:4096].decode("latin-1"),
        }
        if report["url"] == "/__echo/requests":
            body = json.dumps(RECEIVED).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
            return
        RECEIVED.append(report)
        del RECEIVED[:-KEEP]
        if self.reset:
            self.transport.abort()
            return
        steer = {k.lower(): v for k, v in self.headers if k.lower().startswith("x-echo-")}
        keep = self.parser.should_keep_alive() and steer.get("x-echo-close") != "1"
        delay = float(steer.get("x-echo-delay", "0") or 0) or self.delay
        if delay > 0:
            # Stop reading so a pipelined request waits for this answer.
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(delay, self._answer, report, steer, keep)
        else:
            self._answer(report, steer, keep)

    def _answer(self, report: dict, steer: dict, keep: bool) -> None:
        if self.transport.is_closing():
            return
        size = int(steer.get("x-echo-size", "-1"))
        body = pattern(size) if size >= 0 else json.dumps(report).encode() + b"\n"
        status = int(steer.get("x-echo-status", self.status))
        chunks = int(steer.get("x-echo-chunks", "0"))
        head = b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\nx-backend: %s\r\n" % (
            status, self.name.encode())
        if not keep:
            head += b"connection: close\r\n"
        if chunks:
            size = max(1, -(-len(body) // chunks))
            parts = [body[i:i + size] for i in range(0, len(body), size)]
            out = head + b"transfer-encoding: chunked\r\n\r\n" + b"".join(
                b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        else:
            out = head + b"content-length: %d\r\n\r\n%s" % (len(body), body)
        self.transport.write(out)
        if keep:
            self.transport.resume_reading()
        else:
            self.transport.close()


def pattern(size: int) -> bytes:
    """``size`` bytes anyone can re-create to check a transfer byte for byte."""
    unit = bytes(range(256))
    return (unit * (size // 256 + 1))[:size]


async def serve(host: str, port: int, name: str, status: int = 200, delay: float = 0.0,
                reset: bool = False) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EchoProtocol(name, status, delay, reset), host, port,
                                      reuse_address=True)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="examples/echo.py")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="echo")
    ap.add_argument("--status", type=int, default=200, help="the status of every answer by default")
    ap.add_argument("--delay", type=float, default=0.0, help="answer every request this many seconds late")
    ap.add_argument("--reset", action="store_true", help="close each connection without answering")
    args = ap.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.name, args.status, args.delay, args.reset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
