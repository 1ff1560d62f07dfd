"""Request metrics on /metrics: exact over every worker, labelled from the table only."""

from __future__ import annotations

import os
import re
import signal
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.gateway import free_port, objects, request, route, write_config


def _samples(gw) -> dict[tuple, float]:
    """(sample name, sorted label pairs) → value, from a scrape."""
    code, _, body = gw.admin("/metrics")
    assert code == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _labels(**kv) -> tuple:
    return tuple(sorted(kv.items()))


def _config(tmp_path, port, backends, routes):
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, backends, routes))
    return cfg


def _rule(path: str, backend: str) -> dict:
    return {"matches": [{"path": {"type": "PathPrefix", "value": path}}], "backendRefs": [{"name": backend, "port": 80}]}


def test_metrics_count_every_request_exactly_across_workers(tmp_path, gateway_factory, echo_factory, port):
    a = echo_factory("a")
    gw = gateway_factory(_config(tmp_path, port, {"a": [a.port]}, [route("one", [_rule("/one", "a")]),
                                                                    route("two", [_rule("/two", "a")])]))
    for i in range(40):  # each on its own connection: SO_REUSEPORT spreads them over both workers
        assert request(port, f"/one/{i}?q={i}")[0] == 200
    for i in range(15):
        assert request(port, "/two", method="POST", body=b"x" * 10)[0] == 200
    for _ in range(7):
        assert request(port, "/nowhere")[0] == 404
    got = _samples(gw)
    one = _labels(gateway="default/gw", route="default/one", method="GET", status_class="2xx")
    two = _labels(gateway="default/gw", route="default/two", method="POST", status_class="2xx")
    none = _labels(gateway="default/gw", route="", method="GET", status_class="4xx")
    assert got[("fluxgate_requests_total", one)] == 40
    assert got[("fluxgate_requests_total", two)] == 15
    assert got[("fluxgate_requests_total", none)] == 7
    per_worker = [v for (name, _), v in got.items() if name == "fluxgate_worker_requests_total"]
    assert len(per_worker) == 2 and all(per_worker), per_worker  # both workers served: the sum is theirs
    # The histogram: every bucket from 0.5 ms to 30 s, cumulative, +Inf is the count.
    bounds = [dict(labels)["le"] for (name, labels), _ in got.items()
              if name == "fluxgate_request_duration_seconds_bucket" and _labels(**{k: v for k, v in labels
                                                                                   if k != "le"}) == one]
    assert bounds[0] == "0.0005" and "30.0" in bounds and bounds[-1] == "+Inf" and len(bounds) == 16
    assert got[("fluxgate_request_duration_seconds_bucket", tuple(sorted(one + (("le", "+Inf"),))))] == 40
    assert got[("fluxgate_request_duration_seconds_count", one)] == 40
    assert 0 < got[("fluxgate_request_duration_seconds_sum", one)] < 40 * 5
    assert got[("fluxgate_request_size_bytes_sum", two)] == 15 * 10
    assert got[("fluxgate_response_size_bytes_count", one)] == 40
    assert got[("fluxgate_downstream_connections_total", ())] >= 62
    assert got[("fluxgate_upstream_request_duration_seconds_count",
                _labels(route="default/one", backend="default/a:80"))] == 40


def test_metrics_labels_never_hold_a_path_query_host_or_unknown_method(tmp_path, gateway_factory,
                                                                       echo_factory, port):
    a = echo_factory("a")
    gw = gateway_factory(_config(tmp_path, port, {"a": [a.port]}, [route("r", [_rule("/", "a")])]))
    assert request(port, "/secret-path-xyz?token=hunter2", host="private.example.test")[0] == 200
    assert request(port, "/p", method="PROPFIND")[0] == 200
    code, _, body = gw.admin("/metrics")
    text = body.decode()
    for raw in ("secret-path-xyz", "hunter2", "private.example.test", "PROPFIND"):
        assert raw not in text
    assert re.search(r'fluxgate_requests_total\{[^}]*method="OTHER"[^}]*\} 1\.0', text)


def test_metrics_count_upstream_connection_errors_by_reason(tmp_path, gateway_factory, port):
    dead = free_port()  # nothing listens there: connect is refused
    gw = gateway_factory(_config(tmp_path, port, {"dead": [dead]}, [route("r", [_rule("/", "dead")])]))
    for _ in range(3):
        assert request(port, "/")[0] == 502
    got = _samples(gw)
    errors = got[("fluxgate_upstream_connection_errors_total",
                  _labels(route="default/r", backend="default/dead:80", reason="refused"))]
    assert errors >= 3  # each request tries the endpoint (and again, up to the attempts)
    assert got[("fluxgate_requests_total",
                _labels(gateway="default/gw", route="default/r", method="GET", status_class="5xx"))] == 3


def test_metrics_keep_a_killed_workers_counts_and_its_replacement_adds_to_them(tmp_path, gateway_factory,
                                                                              echo_factory, port):
    a = echo_factory("a")
    gw = gateway_factory(_config(tmp_path, port, {"a": [a.port]}, [route("r", [_rule("/", "a")])]))
    key = ("fluxgate_requests_total", _labels(gateway="default/gw", route="default/r", method="GET",
                                              status_class="2xx"))
    for _ in range(30):
        assert request(port, "/")[0] == 200
    assert _samples(gw)[key] == 30
    before = gw.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = gw.worker_pids()
        if len(pids) == 2 and before[0] not in pids:
            break
        time.sleep(0.05)
    gw.wait_ready()
    assert _samples(gw)[key] == 30  # nothing lost with the process
    for _ in range(30):
        assert request(port, "/")[0] == 200
    got = _samples(gw)
    assert got[key] == 60
    assert got[("fluxgate_worker_restarts_total", _labels(reason="signal"))] == 1
    assert got[("fluxgate_downstream_connections_active", ())] >= 0
