"""The channel from the control process to one worker: a ``SOCK_SEQPACKET`` pair.

Each message is one datagram (boundaries kept, order kept), so a worker
reads them one at a time and never sees half of one:

  ``!``                 a new table is published (check the ring)
  ``c``                 the pod shuts down: every response closes its connection
  ``L`` + JSON + fds    listening sockets for this worker's slot: JSON is
                        ``[[listener name, incarnation], …]``, one fd each, in
                        order (SCM_RIGHTS). The set is whole: what it lacks the
                        control process no longer listens on.

EOF (an empty read) means the control process is gone. The worker keeps its
end blocking-free; the control process never blocks on a full channel (a
worker that does not read is hung, and the supervisor deals with that).

Both sides import this module (control and dataplane never import each other).
"""

from __future__ import annotations

import json
import socket

TABLE = b"!"
CLOSING = b"c"
SOCKETS = b"L"
# SCM_MAX_FD is 253 on Linux; a larger set goes in several messages, each whole
# for its names (the last one says ``done``).
MAX_FDS = 200
MAX_MESSAGE = 64 * 1024


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
