"""Leader election (control/leader.py) against the test API server (tests/kubeapi).

Short timings throughout: a 1 s lease, so failover is observable in about a second.
Deadlines here bound eventual behaviour; nothing asserts on speed.
"""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from control.controller.leader import LeaderElector
from tests.kubeapi import KubeAPIServer, client_for

LEASE = "fluxgate-controller"
NS = "kube-system"
FAST = dict(lease_duration=1, renew_deadline=0.6, retry_period=0.1)


@pytest.fixture
def kube():
    server = KubeAPIServer().start()
    yield server
    server.stop()


@pytest.fixture
def leases(kube):
    with client_for(kube.url) as api:
        yield client.CoordinationV1Api(api)


@pytest.fixture
def electors(leases):
    """``make(identity, **timing)``: electors stopped (without release) at the end."""
    made: list[LeaderElector] = []

    def make(identity: str, api=None, **kwargs) -> LeaderElector:
        elector = LeaderElector(api or leases, LEASE, NS, identity, **{**FAST, **kwargs})
        made.append(elector)
        return elector

    yield make
    for elector in made:
        elector.stop(release=False)


def _holder(kube) -> str | None:
    lease = kube.get("coordination.k8s.io/v1", "Lease", LEASE, NS)
    return lease["spec"].get("holderIdentity") if lease else None


def _wait(predicate, timeout: float) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.005)
    return None


def test_leader_one_of_two_leads(kube, electors):
    a, b = electors("a").start(), electors("b").start()
    assert _wait(lambda: a.is_leader or b.is_leader, 3) is not None
    end = time.monotonic() + 0.5  # several renewals and polls
    while time.monotonic() < end:
        assert a.is_leader + b.is_leader == 1
        time.sleep(0.01)
    leader = a if a.is_leader else b
    assert _holder(kube) == leader.identity
    assert a.leader == b.leader == leader.identity


def test_leader_follower_takes_over_within_a_lease_duration_after_leader_dies(kube, electors):
    a = electors("a").start()
    assert a.wait_until_leading(3)
    b = electors("b").start()
    time.sleep(0.3)  # b has seen a's lease, renewed on time
    assert not b.is_leader
    died = time.monotonic()
    a.stop(release=False)  # a crash: no release, the lease has to expire
    assert _holder(kube) == "a"
    time.sleep(0.3)
    assert not b.is_leader, "took over before the lease expired"
    took = _wait(lambda: b.is_leader, FAST["lease_duration"] + FAST["retry_period"] + 1.0)
    assert took is not None, "the follower did not take over"
    # Lease duration counted from a's last renewal (at most one retry period before it
    # died), then at most one jittered retry period until b looks again.
    assert time.monotonic() - died <= FAST["lease_duration"] + 2.2 * FAST["retry_period"] + 0.5
    assert _holder(kube) == "b"
    lease = kube.get("coordination.k8s.io/v1", "Lease", LEASE, NS)
    assert lease["spec"]["leaseTransitions"] == 1


def test_leader_clean_release_hands_over_at_once(kube, electors):
    timing = dict(lease_duration=10, renew_deadline=5, retry_period=0.1)
    stopped = []
    a = electors("a", on_stopped_leading=lambda: stopped.append(_holder(kube)), **timing).start()
    assert a.wait_until_leading(3)
    b = electors("b", **timing).start()
    time.sleep(0.2)
    a.stop(release=True)
    assert stopped == ["a"], "a stepped down before it let go of the lease"
    assert not a.is_leader
    # Far sooner than the 10 s lease would expire.
    assert _wait(lambda: b.is_leader, 2.0) is not None
    assert _holder(kube) == "b"


def test_leader_stop_releases_only_a_lease_it_holds(kube, electors):
    a = electors("a").start()
    assert a.wait_until_leading(3)
    b = electors("b").start()
    time.sleep(0.2)
    b.stop(release=True)  # a follower stopping must not free the leader's lease
    assert _holder(kube) == "a" and a.is_leader


def test_leader_lost_409_race_does_not_lead(kube, leases, electors):
    """a reads the free lease, b takes it before a writes: a's write is a 409."""

    b = electors("b")

    class Racing:
        api_client = leases.api_client

        def __getattr__(self, name):
            return getattr(leases, name)

        def replace_namespaced_lease(self, *args, **kwargs):
            assert b.try_acquire_or_renew()  # b wins between a's read and a's write
            return leases.replace_namespaced_lease(*args, **kwargs)

    leases.create_namespaced_lease(NS, {"metadata": {"name": LEASE}, "spec": {}})  # free
    a = electors("a", api=Racing())
    assert not a.try_acquire_or_renew()
    assert a.conflicts == 1 and not a.is_leader and b.is_leader
    assert _holder(kube) == "b"


def test_leader_lost_create_race_does_not_lead(kube, leases, electors):
    a, b = electors("a"), electors("b")

    class Racing:
        api_client = leases.api_client

        def __getattr__(self, name):
            return getattr(leases, name)

        def create_namespaced_lease(self, *args, **kwargs):
            assert b.try_acquire_or_renew()  # b creates it first
            return leases.create_namespaced_lease(*args, **kwargs)

    a.api = Racing()
    assert not a.try_acquire_or_renew()
    assert a.conflicts == 1 and not a.is_leader and b.is_leader


def test_leader_belief_ends_at_renew_deadline_when_renewals_fail(kube, leases, electors):
    failing = threading.Event()
    events = []

    class Flaky:
        api_client = leases.api_client

        def __getattr__(self, name):
            return getattr(leases, name)

        def replace_namespaced_lease(self, *args, **kwargs):
            if failing.is_set():
                raise ApiException(status=500, reason="Internal Server Error")
            return leases.replace_namespaced_lease(*args, **kwargs)

    a = electors("a", api=Flaky(), on_started_leading=lambda: events.append("started"),
                 on_stopped_leading=lambda: events.append("stopped")).start()
    assert a.wait_until_leading(3)
    failing.set()
    broke = time.monotonic()
    assert _wait(lambda: not a.is_leader, FAST["renew_deadline"] + 0.5) is not None
    assert time.monotonic() - broke <= FAST["renew_deadline"] + 0.5
    assert _wait(lambda: events == ["started", "stopped"], 1.0) is not None
    failing.clear()  # the API answers again: a new term begins
    assert a.wait_until_leading(3)
    assert a.terms == 2 and events == ["started", "stopped", "started"]


def test_leader_race_never_yields_two_leaders(kube, electors):
    """Three electors polling every 10 ms; the leader is made to release and
    rejoin over and over, so the others race for the free lease (409s). An
    observer samples every elector's belief throughout."""
    timing = dict(lease_duration=1, renew_deadline=0.5, retry_period=0.01)
    pool = [electors(name, **timing).start() for name in "abc"]
    everyone = list(pool)
    violations: list[tuple[str, str]] = []
    samples = 0
    done = threading.Event()

    def observe():
        nonlocal samples
        while not done.is_set():
            for x in list(pool):
                for y in list(pool):
                    if x is y:
                        continue
                    # x's belief held over the whole read of y, within one term:
                    # a real overlap, not an artefact of reading one after the other.
                    term, first = x.terms, x.is_leader
                    other = y.is_leader
                    if first and other and x.is_leader and x.terms == term:
                        violations.append((x.identity, y.identity))
                    samples += 1
            time.sleep(0)  # let the electors' threads in between rounds

    observer = threading.Thread(target=observe, daemon=True)
    observer.start()
    handovers = 0
    end = time.monotonic() + 2.5
    try:
        while time.monotonic() < end:
            leader = next((e for e in pool if e.is_leader), None)
            if leader is None:
                time.sleep(0.005)
                continue
            time.sleep(0.02)
            leader.stop(release=True)
            handovers += 1
            pool.remove(leader)
            pool.append(electors(leader.identity, **timing).start())  # rejoins at once
            everyone.append(pool[-1])
    finally:
        done.set()
        observer.join(5)
    assert violations == []
    assert samples > 1000 and handovers > 10
    conflicts = sum(e.conflicts for e in everyone)
    assert conflicts > 0, "the electors never raced"
    print(f"leader race: {samples} samples, {handovers} handovers, {conflicts} lost races (409)")


def test_leader_callbacks_report_the_holder(kube, electors):
    seen: list[str] = []
    a = electors("a").start()
    assert a.wait_until_leading(3)
    b = electors("b", on_new_leader=seen.append).start()
    assert _wait(lambda: seen == ["a"], 2) is not None
    a.stop(release=True)
    assert _wait(lambda: seen == ["a", "b"], 2) is not None


@pytest.mark.parametrize("kwargs, message", [
    (dict(lease_duration=10, renew_deadline=10), "greater than the renew deadline"),
    (dict(lease_duration=15, renew_deadline=2, retry_period=2), "1.2 * retry period"),
    (dict(lease_duration=1.5, renew_deadline=1), "whole number of seconds"),
    (dict(identity=""), "identity must not be empty"),
])
def test_leader_timing_is_checked(leases, kwargs, message):
    identity = kwargs.pop("identity", "a")
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        LeaderElector(leases, LEASE, NS, identity, **kwargs)
