"""The connection's one Deadline: kinds fire when due, in order, with the timer
re-armed only when a due time moves earlier."""

from __future__ import annotations

from dataplane.deadline import ATTEMPT, CLIENT, INF, RESPONSE, RETRY, ROUTE, Deadline


class FakeLoop:
    """A clock moved by hand; timers run when ``advance`` passes them."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list = []
        self.armed = 0  # call_at calls

    def time(self) -> float:
        return self.now

    def call_at(self, when, fn):
        self.armed += 1
        timer = Timer(when, fn)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in sorted(self.timers, key=lambda t: t.when):
            if timer.when <= self.now and not timer.cancelled and not timer.ran:
                timer.ran = True
                timer.fn()


class Timer:
    def __init__(self, when, fn) -> None:
        self.when, self.fn, self.cancelled, self.ran = when, fn, False, False

    def cancel(self) -> None:
        self.cancelled = True


class Owner:
    def __init__(self) -> None:
        self.passed: list[int] = []

    def deadline_passed(self, kind: int) -> None:
        self.passed.append(kind)


def _deadline():
    loop, owner = FakeLoop(), Owner()
    return loop, owner, Deadline(loop, owner)


def test_deadline_fires_a_kind_when_due_and_not_before():
    loop, owner, d = _deadline()
    d.after(CLIENT, 10.0)
    loop.advance(9.9)
    assert owner.passed == []
    loop.advance(0.2)
    assert owner.passed == [CLIENT]
    assert d.due[CLIENT] == INF  # fired once, cleared


def test_deadline_cleared_kind_never_fires():
    loop, owner, d = _deadline()
    d.after(CLIENT, 1.0)
    d.clear(CLIENT)
    loop.advance(5.0)
    assert owner.passed == []


def test_deadline_moving_later_rearms_lazily_once_per_period():
    loop, owner, d = _deadline()
    d.after(CLIENT, 10.0)
    for _ in range(1000):  # a keep-alive client: every request pushes the head deadline on
        loop.advance(0.001)
        d.after(CLIENT, 10.0)
    assert loop.armed == 1  # no new timer per request
    loop.advance(10.0 - 1.0)  # the first timer fires, finds the due time later, re-arms once
    assert owner.passed == [] and loop.armed == 2
    loop.advance(2.0)
    assert owner.passed == [CLIENT]


def test_deadline_moving_earlier_rearms_at_once():
    loop, owner, d = _deadline()
    d.after(CLIENT, 75.0)
    d.after(ROUTE, 0.5)
    assert loop.armed == 2
    loop.advance(0.6)
    assert owner.passed == [ROUTE]
    loop.advance(80.0)
    assert owner.passed == [ROUTE, CLIENT]


def test_deadline_several_due_kinds_fire_in_kind_order():
    loop, owner, d = _deadline()
    d.after(RESPONSE, 1.0)
    d.after(CLIENT, 1.0)
    d.after(ROUTE, 0.5)
    loop.advance(2.0)
    assert owner.passed == [CLIENT, ROUTE, RESPONSE]


def test_deadline_clear_exchange_leaves_the_clients_own():
    loop, owner, d = _deadline()
    for kind in (CLIENT, ROUTE, ATTEMPT, RESPONSE, RETRY):
        d.after(kind, 1.0)
    d.clear_exchange()
    loop.advance(2.0)
    assert owner.passed == [CLIENT]


def test_deadline_closed_fires_nothing():
    loop, owner, d = _deadline()
    d.after(CLIENT, 1.0)
    d.close()
    loop.advance(5.0)
    assert owner.passed == []
