"""The hold-off decides when changes are acted on (control/holdoff.py)."""

from control.holdoff import Holdoff


def test_nothing_pending_has_no_due_time():
    h = Holdoff(100, 500)
    assert h.due() is None and not h.pending


def test_trailing_edge_waits_the_delay_after_the_latest_change():
    h = Holdoff(100, 500)
    h.changed(10.0)
    assert h.due() == 10.1
    h.changed(10.05)
    assert abs(h.due() - 10.15) < 1e-9


def test_a_steady_stream_is_acted_on_within_the_maximum_delay():
    h = Holdoff(100, 500)
    t = 10.0
    while t < 11.0:
        h.changed(t)
        t += 0.05
    assert h.due() == 10.5


def test_trailing_only_mode_never_acts_at_once_even_after_quiet():
    h = Holdoff(100, 500, leading=False)
    h.handled(0.0)
    h.changed(60.0)
    assert h.due() == 60.1


def test_leading_edge_acts_at_once_on_a_change_after_quiet():
    h = Holdoff(100, 500, leading=True)
    h.handled(0.0)
    h.changed(60.0)
    assert h.due() == 60.0
    h.changed(60.01)  # more of the same burst before the load: still one load, now
    assert h.due() == 60.0


def test_leading_edge_batches_changes_right_after_a_load():
    h = Holdoff(100, 500, leading=True)
    h.changed(60.0)
    h.handled(60.0)
    h.changed(60.03)  # 30 ms after the last load: not quiet
    assert abs(h.due() - 60.13) < 1e-9
    h.handled(60.13)
    h.changed(60.3)  # 170 ms of quiet: at once again
    assert h.due() == 60.3


def test_handled_clears_and_retry_schedules_exactly():
    h = Holdoff(100, 500, leading=True)
    h.changed(5.0)
    h.handled(5.0)
    assert h.due() is None
    h.retry(5.05)
    assert h.pending and h.due() == 5.05


def test_taken_changes_are_handled_and_a_change_during_the_build_waits_for_the_next():
    h = Holdoff(100, 500)
    h.changed(10.0)
    assert h.take(10.1) == 10.0 and h.due() is None
    h.changed(10.2)  # while the build runs
    assert abs(h.due() - 10.3) < 1e-9


def test_given_back_changes_keep_their_maximum_delay_from_the_first():
    h = Holdoff(100, 500)
    h.changed(10.0)
    first = h.take(10.1)
    h.give_back(first, 10.45)
    assert h.due() == 10.5  # not 10.55: never past max_delay after the first change
    assert h.can_wait(10.49) and not h.can_wait(10.5)
