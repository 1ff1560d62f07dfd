"""OpenTelemetry tracing through real workers, to a real OTLP/HTTP collector on loopback.

The collector is tests/servers/otlp.py (it decodes what OpenTelemetry's own
exporter sends); the upstream is the echo backend, which says which
traceparent and tracestate it got. Counts are asserted, never timings.
"""

from __future__ import annotations

import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.gateway import echoed, free_port, objects, request, route, write_config
from tests.servers.otlp import OTLPReceiver

PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")


@pytest.fixture
def collector():
    receiver = OTLPReceiver().start()
    yield receiver
    receiver.stop()


def _gateway(tmp_path, gateway_factory, echo_factory, port, **env):
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port], "empty": []}, [
        route("shop", [{"matches": [{"path": {"type": "PathPrefix", "value": "/shop"}}],
                        "backendRefs": [{"name": "a", "port": 80}]}]),
        route("gone", [{"matches": [{"path": {"type": "PathPrefix", "value": "/gone"}}],
                        "backendRefs": [{"name": "empty", "port": 80}]}]),
    ]))
    return gateway_factory(cfg, FLUXGATE_ACCESS_LOG="off", **env), a


def _upstream_saw(body: bytes, name: str) -> list[str]:
    return [v for k, v in echoed(body)["headers"] if k.lower() == name]


def _context(body: bytes) -> tuple[str, str, str]:
    """(trace id, parent id, flags) of the one traceparent the upstream got."""
    (value,) = _upstream_saw(body, "traceparent")
    m = TRACEPARENT.match(value)
    assert m, value
    return m.group(1), m.group(2), m.group(3)


def _trace_counts(gw) -> dict[str, float]:
    code, _, body = gw.admin("/metrics")
    assert code == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == "fluxgate_trace_spans_exported_total":
                out["exported"] = s.value
            elif s.name == "fluxgate_trace_spans_dropped_total":
                out[s.labels["reason"]] = s.value
    return out


def test_spans_reach_the_collector_with_the_trace_the_upstream_saw(tmp_path, gateway_factory, echo_factory,
                                                                   port, collector):
    gw, a = _gateway(tmp_path, gateway_factory, echo_factory, port,
                     FLUXGATE_OTLP_ENDPOINT=collector.url, FLUXGATE_TRACE_SAMPLING="1")
    status, headers, body = request(port, "/shop/cart?token=hunter2", headers={"User-Agent": "probe/1.0"})
    assert status == 200
    trace_id, span_id, flags = _context(body)
    assert flags == "01"
    assert request(port, "/nowhere")[0] == 404
    assert request(port, "/shop", headers={"x-echo-status": "503"})[0] == 503
    assert request(port, "/gone")[0] == 503  # no endpoints: the gateway answers
    spans = collector.wait_for(4)
    by_path = {s["attributes"]["url.path"]: s for s in spans}
    span = by_path["/shop/cart"]
    # The upstream's parent is the gateway's server span, in the same trace.
    assert (span["trace_id"], span["span_id"], span["parent_span_id"]) == (trace_id, span_id, "")
    assert span["kind"] == "SERVER" and span["name"] == "GET default/shop" and span["status"] == "UNSET"
    attrs = span["attributes"]
    assert attrs["http.request.method"] == "GET" and attrs["url.scheme"] == "http"
    assert attrs["http.response.status_code"] == 200 and attrs["server.address"] == "example.com"
    assert attrs["server.port"] == port and attrs["client.address"] == "127.0.0.1"
    assert attrs["network.peer.address"] == "127.0.0.1" and attrs["user_agent.original"] == "probe/1.0"
    assert attrs["fluxgate.route"] == "default/shop" and attrs["fluxgate.gateway"] == "default/gw"
    assert attrs["fluxgate.upstream.address"] == f"127.0.0.1:{a.port}"
    assert attrs["fluxgate.backend"].startswith("default/a")
    assert attrs["fluxgate.request_id"] == headers["x-request-id"]
    assert "hunter2" not in str(span)  # no query anywhere
    assert span["resource"]["service.name"] == "fluxgate" and span["scope"] == "fluxgate"
    assert 0 < span["end"] - span["start"] < 10e9
    # The gateway's own answers are spans too; a 5xx is an error.
    assert by_path["/nowhere"]["attributes"]["http.response.status_code"] == 404
    assert "fluxgate.route" not in by_path["/nowhere"]["attributes"]
    assert by_path["/nowhere"]["status"] == "UNSET"
    errors = [s for s in spans if s["attributes"].get("http.response.status_code") == 503]
    assert len(errors) == 2 and all(s["status"] == "ERROR" for s in errors)
    assert "fluxgate.upstream.address" not in by_path["/gone"]["attributes"]
    assert len({s["trace_id"] for s in spans}) == 4  # each a new trace
    deadline = time.monotonic() + 10
    while _trace_counts(gw).get("exported") != 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _trace_counts(gw) == {"exported": 4, "queue_full": 0, "export_failed": 0}


def test_a_sampled_parent_is_followed_and_an_unsampled_one_too(tmp_path, gateway_factory, echo_factory, port,
                                                               collector):
    gw, _ = _gateway(tmp_path, gateway_factory, echo_factory, port,
                     FLUXGATE_OTLP_ENDPOINT=collector.url, FLUXGATE_TRACE_SAMPLING="0",
                     FLUXGATE_TRACE_SERVICE_NAME="edge")
    sampled = f"00-{PARENT_ID}-{PARENT_SPAN}-01"
    status, _, body = request(port, "/shop/a", headers={"traceparent": sampled, "tracestate": "vendor=x,o=1"})
    assert status == 200
    trace_id, span_id, flags = _context(body)
    assert (trace_id, flags) == (PARENT_ID, "01") and span_id != PARENT_SPAN
    assert _upstream_saw(body, "tracestate") == ["vendor=x,o=1"]  # unchanged
    # Ratio 0: new traces are never sampled, yet the upstream gets a context.
    for _ in range(5):
        tid, _, flags = _context(request(port, "/shop/b")[2])
        assert tid != PARENT_ID and flags == "00"
    (span,) = collector.wait_for(1)
    assert (span["trace_id"], span["span_id"], span["parent_span_id"]) == (PARENT_ID, span_id, PARENT_SPAN)
    assert span["trace_state"] == "vendor=x,o=1" and span["resource"]["service.name"] == "edge"
    time.sleep(1.0)  # two flush intervals: nothing else was sampled
    assert len(collector.spans()) == 1


def test_an_unsampled_parent_is_not_recorded_even_at_ratio_1(tmp_path, gateway_factory, echo_factory, port,
                                                             collector):
    gw, _ = _gateway(tmp_path, gateway_factory, echo_factory, port,
                     FLUXGATE_OTLP_ENDPOINT=collector.url, FLUXGATE_TRACE_SAMPLING="1")
    unsampled = f"00-{PARENT_ID}-{PARENT_SPAN}-00"
    trace_id, span_id, flags = _context(request(port, "/shop", headers={"traceparent": unsampled})[2])
    assert (trace_id, flags) == (PARENT_ID, "00") and span_id != PARENT_SPAN
    request(port, "/shop/marker")  # sampled (ratio 1): arrives after the first would have
    (span,) = collector.wait_for(1)
    time.sleep(0.6)
    assert [s["attributes"]["url.path"] for s in collector.spans()] == ["/shop/marker"]


@pytest.mark.parametrize("bad", [
    f"00-{PARENT_ID.upper()}-{PARENT_SPAN}-01",  # upper-case hex
    f"00-{'0' * 32}-{PARENT_SPAN}-01",  # all-zero trace id
    f"ff-{PARENT_ID}-{PARENT_SPAN}-01",  # version ff
    "not-a-trace-context",
])
def test_an_invalid_traceparent_is_replaced_by_a_new_trace(tmp_path, gateway_factory, echo_factory, port,
                                                           collector, bad):
    gw, _ = _gateway(tmp_path, gateway_factory, echo_factory, port,
                     FLUXGATE_OTLP_ENDPOINT=collector.url, FLUXGATE_TRACE_SAMPLING="1")
    status, _, body = request(port, "/shop", headers={"traceparent": bad})
    trace_id, span_id, flags = _context(body)  # exactly one, and valid
    assert trace_id != PARENT_ID.lower() and flags == "01"
    (span,) = collector.wait_for(1)
    assert (span["trace_id"], span["span_id"], span["parent_span_id"]) == (trace_id, span_id, "")


def test_with_tracing_off_trace_context_passes_unchanged(tmp_path, gateway_factory, echo_factory, port):
    gw, _ = _gateway(tmp_path, gateway_factory, echo_factory, port)
    for value in (f"00-{PARENT_ID}-{PARENT_SPAN}-01", "whatever the client sent"):
        status, _, body = request(port, "/shop", headers={"traceparent": value, "tracestate": "k=v"})
        assert status == 200
        assert _upstream_saw(body, "traceparent") == [value]
        assert _upstream_saw(body, "tracestate") == ["k=v"]
    assert _upstream_saw(request(port, "/shop")[2], "traceparent") == []  # none made up
    assert _trace_counts(gw) == {"exported": 0, "queue_full": 0, "export_failed": 0}


def _dead_collector_case(tmp_path, gateway_factory, echo_factory, port, endpoint: str) -> None:
    """Requests are answered and every sampled span is counted: exported never, dropped each."""
    gw, _ = _gateway(tmp_path, gateway_factory, echo_factory, port, FLUXGATE_OTLP_ENDPOINT=endpoint,
                     FLUXGATE_TRACE_SAMPLING="1", FLUXGATE_TRACE_QUEUE_SIZE="4", FLUXGATE_OTLP_TIMEOUT="1")
    n = 60
    for i in range(n):
        assert request(port, f"/shop/{i}", timeout=5)[0] == 200
    deadline = time.monotonic() + 30
    counts = _trace_counts(gw)
    while counts["queue_full"] + counts["export_failed"] < n and time.monotonic() < deadline:
        time.sleep(0.1)
        counts = _trace_counts(gw)
    assert counts["exported"] == 0
    assert counts["queue_full"] + counts["export_failed"] == n, counts
    assert counts["export_failed"] > 0, counts  # (queue_full too, unless every batch fitted)
    assert request(port, "/shop/after", timeout=5)[0] == 200


def test_a_collector_that_refuses_never_holds_requests_up(tmp_path, gateway_factory, echo_factory, port):
    _dead_collector_case(tmp_path, gateway_factory, echo_factory, port, f"http://127.0.0.1:{free_port()}")


def test_a_collector_that_never_answers_never_holds_requests_up(tmp_path, gateway_factory, echo_factory, port):
    with OTLPReceiver(hang=True) as silent:
        _dead_collector_case(tmp_path, gateway_factory, echo_factory, port, silent.url)
        assert silent.exports > 0  # the exports did reach it


def test_a_collector_that_answers_503_gets_its_spans_counted_as_failed(tmp_path, gateway_factory, echo_factory,
                                                                       port):
    with OTLPReceiver(status=503) as busy:
        _dead_collector_case(tmp_path, gateway_factory, echo_factory, port, busy.url)
