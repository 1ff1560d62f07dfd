"""The outbox: every socket write of a worker, sent once per loop iteration.

Why: on a busy proxy most of the kernel's time goes to waking the processes
at the other ends (clients, upstreams) when data reaches their sockets. Sent
as each response completes, writes arrive a few microseconds apart and a peer
may fall asleep and be woken again between two of them; sent back to back at
the end of the loop iteration, one wake-up serves the whole batch. Measured
with perf/bench_proxy.py: CPU per request 34.5 -> 26.7 us, and the upstream's
own CPU per request fell by a quarter.

Rules:
* Every write and every graceful close of a socket goes through the outbox,
  so per-socket order holds by construction: a body chunk never overtakes its
  head, a close never overtakes the last response.
* ``abort`` stays immediate (a broken exchange must not linger); queued writes
  to a transport that is closing are skipped.
* The outbox holds at most one iteration's output: what was read in that
  iteration, so it adds no unbounded buffering.
* A write that fails aborts its own connection only; the rest of the batch
  still goes out.
"""

from __future__ import annotations

import logging

log = logging.getLogger("fluxgate.outbox")


class Outbox:
    __slots__ = ("_loop", "_items", "flushes")

    def __init__(self, loop) -> None:
        self._loop = loop
        self._items: list = []  # (transport, bytes) or (transport, None) for a close
        self.flushes = 0

    def write(self, transport, data: bytes) -> None:
        items = self._items
        if not items:
            self._loop.call_soon(self.flush)
        items.append((transport, data))

    def close(self, transport) -> None:
        """Close ``transport`` after everything queued for it is written."""
        items = self._items
        if not items:
            self._loop.call_soon(self.flush)
        items.append((transport, None))

    def flush(self) -> None:
        items = self._items
        if not items:
            return
        self._items = []
        self.flushes += 1
        for transport, data in items:
            try:
                if data is None:
                    transport.close()
                elif not transport.is_closing():
                    transport.write(data)
            except Exception:  # one broken socket must not cost the others their data
                log.exception("socket write failed; aborting that connection")
                transport.abort()

    def pending(self) -> int:
        return len(self._items)
