"""Deadlines: every timeout of a client connection and its exchange, on one timer.

One ``Deadline`` per downstream connection holds a due time per kind and one
event-loop timer, armed for the earliest. It serves the connection's own
timeouts and those of the exchange being proxied on it:

  CLIENT    what the connection waits for from its client, one at a time
            (the connection says which): a request head
            (FLUXGATE_HEADER_TIMEOUT, from the head's first byte, or from the
            connection's start for the first), more of a body
            (FLUXGATE_BODY_TIMEOUT, never past the whole request's
            FLUXGATE_REQUEST_TIMEOUT), or a next request on an idle
            keep-alive connection (FLUXGATE_KEEPALIVE_TIMEOUT)
  ROUTE     the route's timeouts.request, from the exchange's start
  ATTEMPT   the route's timeouts.backendRequest, per attempt
  RESPONSE  the response head is due (FLUXGATE_UPSTREAM_RESPONSE_TIMEOUT),
            from when the upstream has the whole request
  RETRY     a retry's back-off has passed

Rules:
* ``set`` and ``clear`` are cheap (a store and a compare): they run per
  request. The timer is re-armed only when a due time moves *earlier* than
  the one it is armed for; when it fires and finds every due time later
  (they moved on meanwhile), it re-arms once for the earliest. A keep-alive
  connection serving thousands of requests thus re-arms about once per
  timeout period, not once per request.
* Firing clears the kind, then calls ``owner.deadline_passed(kind)`` once per
  kind that is due, in the order above; a kind set again by that call waits
  for its new time.
* ``close`` cancels the timer; nothing fires after it.

The loop's clock (``loop.time()``) is the one clock: uvloop caches it per
loop iteration, so reading it costs no system call.
"""

from __future__ import annotations

CLIENT, ROUTE, ATTEMPT, RESPONSE, RETRY = range(5)
NAMES = ("client", "route", "attempt", "response", "retry")
_KINDS = range(len(NAMES))
INF = float("inf")
RESOLUTION = 0.001


class Deadline:
    __slots__ = ("loop", "owner", "due", "_handle", "_armed")

    def __init__(self, loop, owner) -> None:
        self.loop = loop
        self.owner = owner  # has deadline_passed(kind)
        self.due = [INF] * len(NAMES)
        self._handle = None
        self._armed = INF  # when the timer fires (INF: not armed)

    def set(self, kind: int, when: float) -> None:
        self.due[kind] = when
        if when < self._armed:
            self._arm(when)

    def after(self, kind: int, seconds: float) -> None:
        """``set`` ``seconds`` from now."""
        self.set(kind, self.loop.time() + seconds)

    def clear(self, kind: int) -> None:
        # The timer stays armed: it finds nothing due and re-arms (or not) itself.
        self.due[kind] = INF

    def clear_exchange(self) -> None:
        """Clear the exchange's kinds (its response is over, or it is gone)."""
        due = self.due
        due[ROUTE] = due[ATTEMPT] = due[RESPONSE] = due[RETRY] = INF

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed = INF
        self.owner = None

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self.loop.call_at(when, self._fired)

    def _fired(self) -> None:
        self._handle = None
        self._armed = INF
        due = self.due
        # Timers have millisecond resolution and may fire a little early: what is
        # due within it counts as due (asyncio's clock_resolution does the same).
        now = self.loop.time() + RESOLUTION
        for kind in _KINDS:
            if due[kind] <= now:
                due[kind] = INF
                owner = self.owner
                if owner is None:
                    return  # closed by an earlier kind's action
                owner.deadline_passed(kind)
        if self.owner is not None:
            nearest = min(due)
            if nearest < self._armed:
                self._arm(nearest)
