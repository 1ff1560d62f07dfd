"""Retry timing (control/retry.py): the back-off's bounds and cap, the streak, jittered periods."""

from __future__ import annotations

import pytest

from control import retry
from control.retry import Backoff, backoff_delay, jittered


@pytest.fixture
def uniform(monkeypatch):
    """Pin random.uniform to its low (0.0) or high (1.0) end, to read exact bounds."""
    def pin(end: float) -> None:
        monkeypatch.setattr(retry.random, "uniform", lambda a, b: a + (b - a) * end)
    return pin


def test_backoff_delay_doubles_per_failure_with_half_of_it_jittered(uniform):
    uniform(0.0)
    assert [backoff_delay(n, 0.2, 30.0) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    uniform(1.0)
    assert [backoff_delay(n, 0.2, 30.0) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.6]


def test_backoff_delay_stays_within_half_to_whole_of_the_step():
    for n in range(1, 12):
        step = min(5.0, 0.1 * 2 ** (n - 1))
        delays = [backoff_delay(n, 0.1, 5.0) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1  # jittered, not one fixed pause


def test_backoff_delay_never_exceeds_the_cap_even_after_a_long_streak(uniform):
    uniform(1.0)
    assert backoff_delay(9, 0.5, 30.0) == 30.0
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0  # no overflow past the exponent limit
    uniform(0.0)
    assert backoff_delay(10_000, 0.5, 30.0) == 15.0


def test_backoff_counts_a_streak_and_reset_starts_it_over(uniform):
    uniform(1.0)
    b = Backoff(0.05, 0.2)
    assert [b.fail() for _ in range(4)] == [1, 2, 3, 4]
    assert b.delay() == 0.2  # capped
    assert b.reset() == 4  # the streak's length, for the "works again" line
    assert b.failures == 0 and b.reset() == 0
    assert b.fail() == 1 and b.delay() == 0.05  # the shortest delay again


def test_jittered_stretches_a_period_by_at_most_the_fraction(uniform):
    uniform(0.0)
    assert jittered(15.0, 0.1) == 15.0  # never shorter
    uniform(1.0)
    assert jittered(15.0, 0.1) == pytest.approx(16.5)
    assert jittered(2.0, 0.2) == pytest.approx(2.4)


def test_jittered_periods_of_many_loops_spread_out():
    values = {jittered(10.0, 0.1) for _ in range(50)}
    assert len(values) > 1 and all(10.0 <= v <= 11.0 for v in values)
