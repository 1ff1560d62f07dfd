"""The exchange's states: the transition table is the one written in its docstring,
and every transition the table does not allow raises."""

from __future__ import annotations

import re

import pytest

from dataplane import exchange
from dataplane.downstream import Downstream
from dataplane.exchange import TRANSITIONS, Exchange, ExchangeStateError, State
from tests.dataplane.test_protocol import FakeWorker
from tests.dataplane.tables import single

ALL = list(State)
_PROTO = Downstream(FakeWorker(single("up", endpoints=[("127.0.0.1", 9)])))


def _fresh(state: State) -> Exchange:
    ex = Exchange(_PROTO, None, True, False, False, b"")  # a local answer: no request to read
    ex.state = state
    return ex


def test_exchange_states_table_is_the_documented_one():
    documented = {}
    for line in exchange.__doc__.splitlines():
        m = re.match(r"\s+([A-Z]+)\s+→ (.*)$", line)
        if m:
            documented[State[m.group(1)]] = frozenset(
                State[name] for name in re.findall(r"\b([A-Z]{4,})\b", m.group(2)))
    assert documented == TRANSITIONS
    assert set(TRANSITIONS) == set(ALL)


@pytest.mark.parametrize("old", ALL, ids=lambda s: s.name)
@pytest.mark.parametrize("new", ALL, ids=lambda s: s.name)
def test_exchange_states_illegal_transition_raises_and_legal_one_moves(old, new):
    ex = _fresh(old)
    if new in TRANSITIONS[old]:
        ex._move(new)
        assert ex.state == new
    else:
        with pytest.raises(ExchangeStateError, match=f"from {old.name} to {new.name}"):
            ex._move(new)
        assert ex.state == old


def test_exchange_states_abandoned_is_final_and_done_only_abandons():
    assert TRANSITIONS[State.ABANDONED] == frozenset()
    assert TRANSITIONS[State.DONE] == {State.ABANDONED}
    # Nothing goes back to QUEUED: an exchange starts once.
    assert all(State.QUEUED not in targets for targets in TRANSITIONS.values())


def test_exchange_states_derived_flags_follow_the_state():
    started = {s: _fresh(s).response_started for s in ALL}
    assert {s for s, v in started.items() if v} == {State.RESPONDING, State.TUNNEL, State.DONE}
    assert {s for s in ALL if _fresh(s).over} == {State.DONE, State.ABANDONED}
    assert [s for s in ALL if not _fresh(s).started] == [State.QUEUED]
