"""The channel between the control process and one worker: a ``SOCK_SEQPACKET`` pair.

Each message is one datagram (boundaries kept, order kept), so each side
reads them one at a time and never sees half of one. Control to worker:

  ``!``                 a new table is published (check the ring)
  ``c``                 the pod shuts down: every response closes its connection
  ``L`` + JSON + fds    listening sockets for this worker's slot: JSON is
                        ``[[listener name, incarnation], …]``, one fd each, in
                        order (SCM_RIGHTS). The set is whole: what it lacks the
                        control process no longer listens on.

Worker to control:

  ``T`` + count + msgpack  sampled spans for the control process's OTLP
                        exporter (dataplane/tracing.py → control/tracing.py):
                        a 4-byte count, then ``[worker, unix ns, perf_counter,
                        [record, …]]`` (the two clocks read at one moment; a
                        record's fields are SPAN_FIELDS, in order)

EOF (an empty read) means the other side is gone. Neither side ever blocks
on a full channel: the control process skips a wake-up (a worker that does
not read is hung, and the supervisor deals with that); a worker drops the
spans and counts them.

Both sides import this module (control and dataplane never import each other).
"""

from __future__ import annotations

import json
import socket
import struct

import msgspec

TABLE = b"!"
CLOSING = b"c"
SOCKETS = b"L"
SPANS = b"T"
# SCM_MAX_FD is 253 on Linux; a larger set goes in several messages, each whole
# for its names (the last one says ``done``).
MAX_FDS = 200
MAX_MESSAGE = 64 * 1024

# A span record (dataplane/tracing.py ``Tracer.finish`` makes it, control/otlp.py
# reads it): these fields, in this order. Bytes stay bytes; ``endpoint`` is
# [address, port] or None.
SPAN_FIELDS = (
    "traceparent", "trace_in", "tracestate", "t0", "seconds", "method", "path", "scheme", "host", "port",
    "client", "user_agent", "http10", "status", "source", "gateway", "endpoint", "backend", "request_id",
    "body_bytes",
)
_COUNT = struct.Struct("!I")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def pair() -> tuple[socket.socket, socket.socket]:
    """(control's end, worker's end); the worker's is inheritable."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.set_inheritable(True)
    return ours, theirs


def send_sockets(chan: socket.socket, entries: list[tuple[str, int, int]]) -> None:
    """Send ``(name, incarnation, fd)`` for every listening socket of a slot.

    Raises BlockingIOError when the channel is full (the caller retries later)
    and OSError when the worker is gone."""
    chunks = [entries[i:i + MAX_FDS] for i in range(0, len(entries), MAX_FDS)] or [[]]
    for n, chunk in enumerate(chunks):
        body = json.dumps({"listeners": [[name, inc] for name, inc, _ in chunk],
                           "done": n == len(chunks) - 1}).encode()
        socket.send_fds(chan, [SOCKETS + body], [fd for _, _, fd in chunk])


def parse_sockets(data: bytes, fds: list[int]) -> tuple[list[tuple[str, int, int]], bool]:
    """A ``L`` message's ``(name, incarnation, fd)`` list and whether it ends the set.
    Raises ValueError on a malformed message (the fds are the caller's to close)."""
    body = json.loads(data[1:])
    listeners = body["listeners"]
    if len(listeners) != len(fds):
        raise ValueError(f"{len(listeners)} listeners but {len(fds)} sockets")
    return [(str(name), int(inc), fd) for (name, inc), fd in zip(listeners, fds)], bool(body["done"])


def receive(chan: socket.socket) -> tuple[bytes, list[int]] | None:
    """One message and its fds; None when there is none now; (b"", []) at EOF."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(chan, MAX_MESSAGE, MAX_FDS)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b"", []
    return data, list(fds)


def spans_message(worker: int, unix_ns: int, perf: float, records: list) -> bytes:
    """A ``T`` message of ``records`` (it may exceed MAX_MESSAGE: the caller splits)."""
    return SPANS + _COUNT.pack(len(records)) + _encode((worker, unix_ns, perf, records))


def span_count(data: bytes) -> int:
    """How many records a ``T`` message carries, without decoding them.
    Raises ValueError on a message too short to say."""
    if len(data) < 5:
        raise ValueError("span message without a count")
    return _COUNT.unpack_from(data, 1)[0]


def parse_spans(data: bytes) -> tuple[int, int, float, list]:
    """A ``T`` message → (worker, unix ns, perf_counter, records).
    Raises ValueError (msgspec.DecodeError is one) on a malformed message."""
    worker, unix_ns, perf, records = _decode(memoryview(data)[5:])
    if not isinstance(records, list) or any(not isinstance(r, list) or len(r) != len(SPAN_FIELDS)
                                            for r in records):
        raise ValueError("span records of the wrong shape")
    return int(worker), int(unix_ns), float(perf), records
