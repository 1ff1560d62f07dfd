"""The shared metrics segment: regions per worker slot, summed by labels, exact when full."""

from __future__ import annotations

import uuid

import pytest

from dataplane.metrics import Meter
from shm.schema import route_label
from shm import metrics as m


@pytest.fixture
def segment():
    seg = m.Segment(f"t-{uuid.uuid4().hex[:8]}", 2, create=True)
    yield seg
    seg.close(unlink=True)


def _requests(seg) -> dict:
    summed, _ = m.read_all(seg)
    return {labels: v[m.COUNT] for (kind, labels), v in summed.items() if kind == m.REQUEST and v[m.COUNT]}


def test_two_workers_counts_are_summed_by_labels_and_per_slot(segment):
    one, two = Meter(segment.region(0)), Meter(segment.region(1))
    for meter, n in ((one, 3), (two, 4)):
        for _ in range(n):
            meter.request("ns/gw", "HTTPRoute/ns/r#0", b"GET", 200, 0.002, 0, 10)
    two.request("ns/gw", "HTTPRoute/ns/r#1", b"GET", 503, 0.002, 0, 10)  # another rule of the same route
    assert _requests(segment) == {("ns/gw", "ns/r", "GET", "2xx"): 7, ("ns/gw", "ns/r", "GET", "5xx"): 1}
    assert m.read_all(segment)[1] == [3, 5]


def test_a_replacement_worker_continues_its_slots_counts(segment):
    first = Meter(segment.region(0))
    first.opened()
    first.request("ns/gw", "HTTPRoute/ns/r#0", b"GET", 200, 0.01, 0, 1)
    again = Meter(m.Segment(segment.name.split(".")[1], 2, create=False).region(0))
    again.request("ns/gw", "HTTPRoute/ns/r#0", b"GET", 200, 0.01, 0, 1)
    assert _requests(segment) == {("ns/gw", "ns/r", "GET", "2xx"): 2}
    conns = m.read_all(segment)[0][(m.CONNECTIONS, ())]
    assert (conns[m.ACTIVE], conns[m.TOTAL]) == (0, 1)  # the dead one's open connection is gone


def test_histogram_bucket_is_the_first_bound_at_or_over_the_duration(segment):
    meter = Meter(segment.region(0))
    for seconds in (0.0001, 0.0005, 0.0006, 31.0):
        meter.request("", "", b"GET", 404, seconds, 0, 0)
    v = m.read_all(segment)[0][(m.REQUEST, ("", "", "GET", "4xx"))]
    buckets = v[m.BUCKET0:m.BUCKET0 + m.BUCKETS]
    assert buckets[0] == 2 and buckets[1] == 1 and buckets[-1] == 1 and sum(buckets) == 4


def test_a_full_region_counts_new_label_sets_exactly_in_the_overflow_record(segment, monkeypatch):
    monkeypatch.setattr(m, "MAX_RECORDS", 8)
    # 3 overflow records and the connections record: 4 used, room for 4 label sets
    meter = Meter(segment.region(0))
    for i in range(10):
        meter.request("gw", f"HTTPRoute/ns/r{i}#0", b"GET", 200, 0.001, 0, 0)
    got = _requests(segment)
    assert sum(got.values()) == 10
    assert got[(m.OVERFLOW,) * 4] == 6
    assert m.read_all(segment)[0][(m.CONNECTIONS, ())][m.OVERFLOWED] == 6


def test_unknown_methods_are_one_label_and_one_key():
    meter = Meter(m.Segment(None, 1, create=False).region(0))
    for i in range(50):
        meter.request("gw", "", b"X-%d" % i, 200, 0.001, 0, 0)
    assert len(meter._keys) <= 2


def test_route_label_is_the_objects_namespace_and_name():
    assert route_label("HTTPRoute/team-a/shop#2") == "team-a/shop"
    assert route_label("") == ""
