"""Retry timing: jittered exponential back-off with a cap, and jittered periods.

Every loop in control/ that tries again after a failure, or acts on a period,
takes its timing from here, so the rules below hold everywhere:

* ``backoff_delay(n, base, cap)``: the pause after the n-th failure in a row
  (n >= 1) lies in [d/2, d] with d = min(cap, base * 2**(n-1)). It never
  exceeds ``cap``, and a long streak cannot overflow (the exponent stops at 30).
  Half of it is random ("equal jitter"), so many clients that failed together
  (every watch of a pod, every pod after an API server restart) do not retry
  together, and none retries in a tight loop.
* ``Backoff``: the failures of the current streak and the delay they call for.
  A success (``reset``) ends the streak: the next failure waits the shortest
  delay again.
* ``jittered(period, fraction)``: a period stretched by up to ``fraction``
  (never shortened), for periodic actions that must not run in step across
  threads or pods (re-lists, resyncs, lease polls).

Users: the Kubernetes reflectors (watch retries, resync and re-list periods),
the controller's status passes (``backoff_delay``) and the leader elector's
polls (``jittered``). The supervisor's worker restarts are not jittered (one
process, deterministic restart times are what its tests and log show), and the
status writer's 409 retries re-read at once (a conflict is not a failure to
wait out): neither uses this module.
"""

from __future__ import annotations

import random

_MAX_EXPONENT = 30  # base * 2**30 is past any cap; keeps the float finite


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Exponential back-off with jitter: in [d/2, d], d = base·2^(n-1) capped
    (the watches' and the controller's status passes')."""
    d = min(cap, base * (2 ** min(failures - 1, _MAX_EXPONENT)))
    return d / 2 + random.uniform(0, d / 2)


def jittered(period: float, fraction: float) -> float:
    """``period`` stretched by a random part of up to ``fraction`` of it."""
    return period * (1 + random.uniform(0, fraction))


class Backoff:
    """One retry loop's streak of failures, and how long to wait after it."""

    __slots__ = ("base", "cap", "failures")

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0  # in the current streak; 0 after a success

    def fail(self) -> int:
        """Count a failure; returns the streak's length."""
        self.failures += 1
        return self.failures

    def delay(self) -> float:
        """The pause the streak so far calls for (call after ``fail``)."""
        return backoff_delay(self.failures, self.base, self.cap)

    def reset(self) -> int:
        """A success ends the streak; returns how many failures it had."""
        failures, self.failures = self.failures, 0
        return failures
