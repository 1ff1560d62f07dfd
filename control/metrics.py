"""Every metric family ``fluxgate run`` exports, in one place (the admin server's /metrics).

Two sources, read at scrape time:
* the workers' counters in shared memory (shm/metrics.py), summed over every
  worker slot: requests, their durations and sizes, upstream attempts,
  retries and connection errors, downstream connections and bytes. A family
  a later feature adds (rate limits, auth, TLS) is a kind there and a few
  lines here;
* the control process's own numbers: the table, workers, restarts, config errors.

Labels never carry a raw path, query, host or header value: the route is the
matched route object's namespace/name, the method a known one or OTHER (both
made in the worker, dataplane/metrics.py), the gateway and backend come from
the table.
"""

from __future__ import annotations

import time

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    SummaryMetricFamily)

from shm import metrics as m

REQUEST_LABELS = ["gateway", "route", "method", "status_class"]
UPSTREAM_LABELS = ["route", "backend"]
ERROR_LABELS = ["route", "backend", "reason"]

# Every family name (without the _total/_bucket/... suffixes Prometheus adds),
# for the dashboard test (deploy/dashboards/ may use only these).
FAMILIES = (
    "fluxgate_requests", "fluxgate_request_duration_seconds", "fluxgate_request_size_bytes",
    "fluxgate_response_size_bytes", "fluxgate_upstream_request_duration_seconds", "fluxgate_retries",
    "fluxgate_upstream_connection_errors", "fluxgate_downstream_connections_active",
    "fluxgate_downstream_connections", "fluxgate_downstream_received_bytes",
    "fluxgate_downstream_sent_bytes", "fluxgate_metrics_overflow", "fluxgate_access_log_dropped",
    "fluxgate_trace_spans_exported", "fluxgate_trace_spans_dropped",
    "fluxgate_table_generation", "fluxgate_table_publishes", "fluxgate_table_bytes",
    "fluxgate_table_age_seconds", "fluxgate_config_errors", "fluxgate_workers",
    "fluxgate_worker_restarts", "fluxgate_worker_requests", "fluxgate_rebuild_seconds",
    "fluxgate_kubernetes_synced", "fluxgate_routes_held_for_endpoints",
    "fluxgate_drift_recycles", "fluxgate_table_integrity_errors", "fluxgate_listeners_unbound",
)


def _buckets(values: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (shm) → Prometheus's cumulative ``le`` buckets."""
    out, total = [], 0
    for bound, n in zip(m.BOUNDS + (float("inf"),), values[m.BUCKET0:m.BUCKET0 + m.BUCKETS]):
        total += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return out


def worker_families(segment: m.Segment, spans=None):
    """The families summed over every worker's region; ``spans``: the control
    process's span export (control/tracing.py), None with tracing off."""
    records, per_slot = m.read_all(segment)
    requests = CounterMetricFamily("fluxgate_requests", "Requests answered", labels=REQUEST_LABELS)
    duration = HistogramMetricFamily(
        "fluxgate_request_duration_seconds",
        "From the request head's first byte to the response's last byte", labels=REQUEST_LABELS)
    req_size = SummaryMetricFamily("fluxgate_request_size_bytes", "Request body bytes received",
                                   labels=REQUEST_LABELS)
    resp_size = SummaryMetricFamily("fluxgate_response_size_bytes",
                                    "Response bytes sent to the client (head and body)", labels=REQUEST_LABELS)
    upstream = HistogramMetricFamily(
        "fluxgate_upstream_request_duration_seconds",
        "From an attempt's request going to the upstream to its response's end", labels=UPSTREAM_LABELS)
    retries = CounterMetricFamily("fluxgate_retries", "Upstream attempts retried", labels=UPSTREAM_LABELS)
    errors = CounterMetricFamily("fluxgate_upstream_connection_errors",
                                 "Upstream connections that failed (refused, reset, timeout, tls)",
                                 labels=ERROR_LABELS)
    active = GaugeMetricFamily("fluxgate_downstream_connections_active", "Client connections open now")
    conns = CounterMetricFamily("fluxgate_downstream_connections", "Client connections accepted")
    bytes_in = CounterMetricFamily("fluxgate_downstream_received_bytes", "Bytes received from clients")
    bytes_out = CounterMetricFamily("fluxgate_downstream_sent_bytes", "Bytes sent to clients")
    overflow = CounterMetricFamily(
        "fluxgate_metrics_overflow",
        f"Label sets counted without their labels ({m.OVERFLOW}): a worker's metrics region was full")
    dropped = CounterMetricFamily("fluxgate_access_log_dropped",
                                  "Access log lines dropped: the destination did not keep up")
    sums = [0] * m.WIDTH[m.CONNECTIONS]
    for (kind, labels), v in sorted(records.items()):
        labels = list(labels)
        if kind == m.REQUEST:
            if not v[m.COUNT]:
                continue
            requests.add_metric(labels, v[m.COUNT])
            duration.add_metric(labels, _buckets(v), v[m.MICROS] / 1e6)
            req_size.add_metric(labels, v[m.COUNT], v[m.REQ_BYTES])
            resp_size.add_metric(labels, v[m.COUNT], v[m.RESP_BYTES])
        elif kind == m.UPSTREAM:
            if v[m.COUNT]:
                upstream.add_metric(labels, _buckets(v), v[m.MICROS] / 1e6)
            if v[m.RETRIES]:
                retries.add_metric(labels, v[m.RETRIES])
        elif kind == m.UPSTREAM_ERROR:
            if v[m.COUNT]:
                errors.add_metric(labels, v[m.COUNT])
        elif kind == m.CONNECTIONS:
            sums = [a + b for a, b in zip(sums, v)]
    active.add_metric([], sums[m.ACTIVE])
    conns.add_metric([], sums[m.TOTAL])
    bytes_in.add_metric([], sums[m.BYTES_IN])
    bytes_out.add_metric([], sums[m.BYTES_OUT])
    overflow.add_metric([], sums[m.OVERFLOWED])
    dropped.add_metric([], sums[m.LOG_DROPPED])
    slots = CounterMetricFamily("fluxgate_worker_requests",
                                "Requests answered by the workers of each slot (a replacement adds to its slot's)",
                                labels=["worker"])
    # One region per seat; slot k's seats are k and k + slots (control/supervisor.py).
    nslots = max(1, len(per_slot) // 2)
    for index in range(nslots):
        slots.add_metric([str(index)], sum(per_slot[index::nslots]))
    yield from (requests, duration, req_size, resp_size, upstream, retries, errors,
                active, conns, bytes_in, bytes_out, overflow, dropped, slots)
    yield from trace_families(sums[m.SPANS_DROPPED], spans.counts() if spans is not None else (0, 0, 0))


def trace_families(worker_dropped: int, export: tuple[int, int, int]):
    """Span counts: the workers' (a full channel) and the control process's export's."""
    exported, queue_full, failed = export
    done = CounterMetricFamily("fluxgate_trace_spans_exported",
                               "Spans the OTLP collector accepted (FLUXGATE_OTLP_ENDPOINT)")
    done.add_metric([], exported)
    dropped = CounterMetricFamily(
        "fluxgate_trace_spans_dropped",
        "Sampled spans never exported: a worker's channel or the export queue was full (queue_full),"
        " or the collector refused, was unreachable or too slow (export_failed)", labels=["reason"])
    dropped.add_metric(["queue_full"], worker_dropped + queue_full)
    dropped.add_metric(["export_failed"], failed)
    yield from (done, dropped)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    """A gauge family of one unlabelled sample."""
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    """A counter family of one unlabelled sample."""
    c = CounterMetricFamily(name, doc)
    c.add_metric([], value)
    return c


def config_errors(pipeline) -> CounterMetricFamily:
    """``fluxgate_config_errors_total{kind, reason}``: problems with the input
    (control/pipeline.py ``error_labels``), counted when found."""
    c = CounterMetricFamily("fluxgate_config_errors",
                            "Config files, documents or objects rejected (each kept its last good version)",
                            labels=["kind", "reason"])
    for (kind, reason), count in sorted(pipeline.config_errors.items()):
        c.add_metric([kind, reason], count)
    return c


class RunnerCollector:
    """What ``fluxgate run`` exports (``state`` is the runner), read at scrape time."""

    def __init__(self, state) -> None:
        self.state = state

    def collect(self):
        s = self.state
        yield gauge("fluxgate_table_generation", "Generation of the published route table", s.writer.generation)
        yield counter("fluxgate_table_publishes", "Tables published", s.publisher.published)
        yield gauge("fluxgate_table_bytes", "Size of the published route table", s.publisher.last_bytes)
        yield gauge("fluxgate_table_age_seconds", "Seconds since the table was published (0: none yet)",
                    round(time.monotonic() - s.writer.published_at, 3) if s.writer.generation else 0)
        yield config_errors(s.pipeline)
        workers = s.supervisor.describe()
        g = GaugeMetricFamily("fluxgate_workers", "Worker processes", labels=["state"])
        g.add_metric(["alive"], sum(1 for w in workers if w["alive"]))
        g.add_metric(["serving"], sum(1 for w in workers if w["generation"]))
        yield g
        c = CounterMetricFamily("fluxgate_worker_restarts", "Worker restarts", labels=["reason"])
        for reason, n in sorted(s.supervisor.restart_reasons.items()):
            c.add_metric([reason], n)
        yield c
        yield counter("fluxgate_drift_recycles",
                      "Workers recycled because they served another table than the published one",
                      s.supervisor.drift_recycles)
        yield counter("fluxgate_table_integrity_errors",
                      "Damaged table bytes the workers found in shared memory (each republished)",
                      s.integrity_errors)
        yield gauge("fluxgate_listeners_unbound", "Listeners of the table that cannot be bound (see the log)",
                    len(s.sockets.failed))
        yield from worker_families(s.metrics, s.spans)
        if getattr(s, "kubernetes", False):
            yield gauge("fluxgate_kubernetes_synced", "1 once every watch has listed (the first table waits for it)",
                        1 if s.source.synced else 0)
            yield counter("fluxgate_routes_held_for_endpoints",
                          "Publishes held while new routes waited for their endpoints", s.held_for_endpoints)
