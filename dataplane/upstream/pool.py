"""Keep-alive connection pools, one per upstream endpoint (address, port).

Rules:
* A connection is in the pool only while idle: no exchange attached, its last
  response fully read, and the upstream did not ask to close.
* Most recently used first (LIFO): warm connections stay warm, surplus ones go
  idle long enough to be swept.
* Idle connections are closed by a periodic sweep (one timer per worker, not a
  timer per connection) after ``idle_timeout``, and beyond ``max_idle`` per
  endpoint at release time.
* A connection the upstream half-closed while idle is dropped when its EOF
  arrives (``UpstreamConnection.connection_lost``/``eof_received`` call
  ``discard``), so a dead one is never handed out knowingly; the race where the
  close is still in flight is handled by a retry on a fresh connection.
"""

from __future__ import annotations

import time


class Pool:
    __slots__ = ("_idle", "max_idle", "idle_timeout", "opened", "reused", "now")

    def __init__(self, max_idle: int, idle_timeout: float) -> None:
        self._idle: dict[tuple[str, int], list] = {}
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.opened = 0  # connections opened (metrics)
        self.reused = 0  # requests sent on a pooled connection (metrics)
        # A coarse clock, advanced by sweep(): idle times need seconds, not a
        # clock read per request.
        self.now = time.monotonic()

    def acquire(self, key: tuple[str, int]):
        """An idle connection to ``key`` or None."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:  # closed ones leave at connection_lost; this is the race
                self.reused += 1
                return conn
        return None

    def release(self, conn) -> None:
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = self.now
        idle.append(conn)

    def discard(self, conn) -> None:
        idle = self._idle.get(conn.key)
        if idle:
            try:
                idle.remove(conn)
            except ValueError:
                pass

    def sweep(self, now: float | None = None) -> int:
        """Close connections idle longer than ``idle_timeout``; return how many."""
        now = time.monotonic() if now is None else now
        self.now = now
        closed = 0
        for key, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if now - conn.idle_since > self.idle_timeout or conn.closed:
                    conn.close()
                    closed += 1
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        return closed

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def close_all(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
