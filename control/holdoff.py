"""The hold-off: when a change to the source is acted on. Pure; the caller passes the time.

Rules (FLUXGATE_HOLDOFF_MS = ``delay``, FLUXGATE_HOLDOFF_MAX_MS = ``max_delay``):

* Trailing edge: a change is acted on ``delay`` after the latest change, so a
  burst (``kubectl apply`` of fifty objects) is one load and one publish;
* never more than ``max_delay`` after the first unhandled change, so a steady
  stream of changes cannot starve the gateway;
* leading edge (``leading=True``, Kubernetes mode): a change that comes after
  a quiet period - nothing acted on within the last ``delay`` - is acted on at
  once. A lone edit then costs no hold-off at all, and a burst still costs at
  most two loads (its first event, then the rest). Every Kubernetes event is a
  whole, consistent object, so acting on the first one never serves half of
  anything. File mode keeps the trailing edge only: an editor may write a file
  in several steps, and the hold-off lets the last one land first.

Invariant: ``due()`` is None exactly when nothing waits; a change is never
dropped, only merged into the next load.
"""

from __future__ import annotations


class Holdoff:
    def __init__(self, delay_ms: int, max_delay_ms: int, *, leading: bool = False) -> None:
        self.delay = delay_ms / 1000.0
        self.max_delay = max_delay_ms / 1000.0
        self.leading = leading
        self._first = 0.0  # first unhandled change; 0.0: none
        self._last = 0.0  # latest unhandled change
        self._immediate = False
        self._handled = float("-inf")  # when changes were last acted on

    @property
    def pending(self) -> bool:
        return self._first != 0.0

    def changed(self, now: float) -> None:
        """The source changed at ``now``."""
        if not self._first:
            self._first = now
            self._immediate = self.leading and now - self._handled >= self.delay
        self._last = now

    def due(self) -> float | None:
        """When to act on the pending changes (None: nothing pending)."""
        if not self._first:
            return None
        if self._immediate:
            return self._first
        return min(self._last + self.delay, self._first + self.max_delay)

    def can_wait(self, now: float) -> bool:
        """Changes are pending and may wait longer (before ``max_delay``)."""
        return self.pending and now < self._first + self.max_delay

    def wait_more(self, now: float) -> None:
        """Not yet (new routes wait for their endpoints, warming.py): act again
        ``delay`` after ``now`` or after the latest change, never past ``max_delay``."""
        self._immediate = False
        self._last = now

    def waited(self, now: float) -> float:
        """How long the oldest pending change has waited (0.0 if none)."""
        return now - self._first if self._first else 0.0

    def handled(self, now: float) -> None:
        """The pending changes were acted on (loaded, published or found moot)."""
        self._first = self._last = 0.0
        self._immediate = False
        self._handled = now

    def take(self, now: float) -> float:
        """A build starts now with the pending changes: they count as handled
        (a change during the build arms the hold-off afresh, for the next one).
        Returns when the first of them came (``now`` if none was pending)."""
        first = self._first or now
        self.handled(now)
        return first

    def give_back(self, first: float, now: float) -> None:
        """The build started at ``take`` did not publish and may wait longer (new
        routes wait for their endpoints): pending again since ``first``, acted
        on again ``delay`` after ``now``, never past ``max_delay`` after ``first``."""
        self._first = min(self._first, first) if self._first else first
        self.wait_more(now)

    def retry(self, at: float) -> None:
        """Acting failed for a passing reason (a busy ring): try again at ``at``."""
        self._first = self._last = at
        self._immediate = True
