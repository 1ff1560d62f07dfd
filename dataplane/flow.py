"""Flow control of one client connection: why reading is paused, and writing back-pressure.

Reading from the client pauses while any reason holds (uvicorn keeps this
apart too): the upstream is not keeping up with the request body
(``UPSTREAM``), a body is buffering before its upstream connection exists
(``BODY``), or too many pipelined requests are queued (``PIPELINE``). It
resumes when the last reason is gone. Writing the other way: when the
client reads slower than the upstream sends, the upstream connection of the
active exchange stops being read until the client catches up.
"""

from __future__ import annotations

UPSTREAM = 1
BODY = 2
PIPELINE = 4


class FlowControl:
    __slots__ = ("transport", "blocked", "closed")

    def __init__(self, transport) -> None:
        self.transport = transport
        self.blocked = 0  # the reasons reading is paused for
        self.closed = False  # set by the connection: no more calls on the transport

    def block(self, reason: int) -> None:
        if not self.blocked and not self.closed:
            self.transport.pause_reading()
        self.blocked |= reason

    def unblock(self, reason: int) -> None:
        was = self.blocked
        self.blocked &= ~reason
        if was and not self.blocked and not self.closed:
            self.transport.resume_reading()


def pause_upstream(exchange, paused: bool) -> None:
    """The client's socket buffer filled (or drained): stop (or resume) reading
    the upstream connection of ``exchange``, if it has one."""
    if exchange is not None and exchange.conn is not None:
        transport = exchange.conn.transport
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()
