"""The control process's span export (control/tracing.py): the workers' ``T`` messages
→ a bounded queue → the export thread, with every span counted once.

The exporter here is a fake (it records what it is given, may refuse, may be
held at a gate); OpenTelemetry's own exporter against a real receiver is
tests/e2e/test_tracing.py.
"""

from __future__ import annotations

import threading
import time

from common import channel
from control.tracing import SpanExport


class FakeExporter:
    def __init__(self, ok: bool = True, gate: threading.Event | None = None) -> None:
        self.ok = ok
        self.gate = gate  # set: the export may finish
        self.batches: list = []
        self.started = threading.Event()

    def export(self, batches) -> bool:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(batches)
        return self.ok

    def shutdown(self) -> None:
        pass

    def records(self) -> list:
        return [r for batches in self.batches for _, _, _, records in batches for r in records]


def message(n: int, worker: int = 0, tag: bytes = b"") -> bytes:
    record = [b"tp" + tag, b"", b"", 1.0, 0.001, b"GET", b"/", b"http", b"h", 80, b"192.0.2.1", b"ua", False,
              200, "", "", None, "", b"r", 0]
    assert len(record) == len(channel.SPAN_FIELDS)
    return channel.spans_message(worker, time.time_ns(), time.perf_counter(), [list(record)] * n)


def test_messages_from_several_workers_are_exported_and_counted():
    exporter = FakeExporter()
    export = SpanExport(exporter)
    export.receive(message(3, worker=0))
    export.receive(message(2, worker=1))
    export.close()
    assert len(exporter.records()) == 5
    assert {worker for batches in exporter.batches for worker, _, _, _ in batches} == {0, 1}
    assert export.counts() == (5, 0, 0)


def test_a_full_queue_drops_whole_messages_and_counts_them_while_the_exporter_is_stuck():
    gate = threading.Event()
    exporter = FakeExporter(gate=gate)
    export = SpanExport(exporter, queue_size=4)
    export.receive(message(3))
    assert exporter.started.wait(5)  # 3 are with the exporter, which waits at the gate
    export.receive(message(2))  # 3 < 4 wait: queued whole (the bound is the size plus one message)
    export.receive(message(1))  # 5 wait: no room
    export.receive(message(6))
    assert export.counts() == (0, 7, 0)
    gate.set()
    export.close()
    assert export.counts() == (5, 7, 0) and len(exporter.records()) == 5


def test_failed_exports_are_counted_as_dropped():
    export = SpanExport(FakeExporter(ok=False))
    export.receive(message(7))
    export.close()
    assert export.counts() == (0, 0, 7)


def test_an_exporter_that_raises_loses_its_batch_not_the_thread():
    class Raising(FakeExporter):
        def export(self, batches):
            if not self.batches:
                self.batches.append(batches)
                raise RuntimeError("boom")
            return super().export(batches)

    exporter = Raising()
    export = SpanExport(exporter)
    export.receive(message(2))
    deadline = time.monotonic() + 5
    while export.counts()[2] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    export.receive(message(3))
    export.close()
    assert export.counts() == (3, 0, 2)


def test_a_malformed_message_is_counted_and_the_next_one_still_exported():
    exporter = FakeExporter()
    export = SpanExport(exporter)
    export.receive(channel.SPANS)  # no count at all: dropped on the loop
    bad = message(2)[:-7]  # truncated msgpack: counted as failed on the thread
    export.receive(bad)
    export.receive(message(1, tag=b"-ok"))
    export.close()
    assert export.malformed == 2
    assert export.counts() == (1, 0, 2)
    assert [r[0] for r in exporter.records()] == [b"tp-ok"]


def test_messages_that_come_within_the_delay_go_out_in_one_export_and_a_lone_one_still_goes():
    exporter = FakeExporter()
    export = SpanExport(exporter, delay=0.5)
    try:
        export.receive(message(3))
        time.sleep(0.1)
        export.receive(message(2, worker=1))
        deadline = time.monotonic() + 5
        while export.counts()[0] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert export.counts() == (5, 0, 0) and len(exporter.batches) == 1  # one export, two messages
        export.receive(message(1))  # nothing comes after it: it goes out once the delay is over
        deadline = time.monotonic() + 5
        while export.counts()[0] < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert export.counts() == (6, 0, 0) and len(exporter.batches) == 2
    finally:
        export.close()
