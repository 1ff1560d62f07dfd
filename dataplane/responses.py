"""Responses the gateway makes itself, prebuilt as bytes at import.

Each is complete (status line, headers, short body) in a keep-alive and a
close variant; the hot path only picks one. Bodies are short, plain text and
say what happened, never internal detail.
"""

from __future__ import annotations

from http import HTTPStatus

SERVER = b"fluxgate"

_BODIES = {
    400: b"bad request\n",
    404: b"no route for this request\n",
    405: b"method not allowed\n",
    408: b"request timeout\n",
    413: b"request body too large\n",
    414: b"request line too long\n",
    417: b"expectation failed\n",
    431: b"request headers too large\n",
    500: b"no backend can serve this route\n",
    501: b"not implemented\n",
    502: b"upstream failed\n",
    503: b"no healthy upstream\n",
    504: b"upstream timed out\n",
    505: b"http version not supported\n",
}


def build(status: int, body: bytes, *, close: bool, extra: bytes = b"") -> bytes:
    reason = HTTPStatus(status).phrase.encode()
    return (
        b"HTTP/1.1 %d %s\r\nserver: %s\r\ncontent-type: text/plain\r\n"
        b"content-length: %d\r\n%sconnection: %s\r\n\r\n%s"
        % (status, reason, SERVER, len(body), extra, b"close" if close else b"keep-alive", body)
    )


# status -> (keep-alive bytes, close bytes)
PREBUILT = {s: (build(s, b, close=False), build(s, b, close=True)) for s, b in _BODIES.items()}


# An HTTP/2 client (prior knowledge) on a listener that speaks HTTP/1.1 only.
H2_NOT_ENABLED = build(505, b"HTTP/2 is not enabled on this listener\n", close=True)


def redirect(status: int, location: bytes, close: bool) -> bytes:
    """A redirect the gateway answers itself (RequestRedirect filter)."""
    return (
        b"HTTP/1.1 %d %s\r\nserver: %s\r\nlocation: %s\r\ncontent-length: 0\r\nconnection: %s\r\n\r\n"
        % (status, HTTPStatus(status).phrase.encode(), SERVER, location, b"close" if close else b"keep-alive")
    )


def preflight(lines: bytes, close: bool) -> bytes:
    """The answer to a CORS preflight: 200, no body, the CORS header lines."""
    return (
        b"HTTP/1.1 200 OK\r\nserver: %s\r\n%scontent-length: 0\r\nconnection: %s\r\n\r\n"
        % (SERVER, lines, b"close" if close else b"keep-alive")
    )


def error(status: int, close: bool, head_only: bool = False, rid: bytes | None = None) -> bytes:
    """The response for ``status`` (prebuilt; with the request id in its body
    when ``rid`` is given); headers only for HEAD requests."""
    data = PREBUILT[status][close] if rid is None else build(
        status, _BODIES[status] + b"request id: " + rid + b"\n", close=close)
    if head_only:
        return data[: data.index(b"\r\n\r\n") + 4]
    return data
