"""The outbox: writes leave once per loop iteration, in order, closes last."""

from __future__ import annotations

import asyncio

from dataplane.outbox import Outbox


class Transport:
    def __init__(self, log, name):
        self.log, self.name, self.closing = log, name, False

    def write(self, data):
        self.log.append((self.name, data))

    def close(self):
        self.closing = True
        self.log.append((self.name, "close"))

    def is_closing(self):
        return self.closing


def test_outbox_sends_nothing_until_the_iteration_ends_then_everything_in_order():
    loop = asyncio.new_event_loop()
    try:
        log: list = []
        box = Outbox(loop)
        a, b = Transport(log, "a"), Transport(log, "b")
        box.write(a, b"1")
        box.write(b, b"x")
        box.write(a, b"2")
        box.close(a)
        assert log == [] and box.pending() == 4
        loop.run_until_complete(asyncio.sleep(0))  # one turn of the loop
        assert log == [("a", b"1"), ("b", b"x"), ("a", b"2"), ("a", "close")]
        assert box.flushes == 1 and box.pending() == 0
    finally:
        loop.close()


def test_outbox_skips_writes_to_a_transport_that_is_closing():
    loop = asyncio.new_event_loop()
    try:
        log: list = []
        box = Outbox(loop)
        a = Transport(log, "a")
        box.write(a, b"1")
        a.closing = True  # aborted meanwhile
        box.flush()
        assert log == []
    finally:
        loop.close()


def test_outbox_schedules_one_flush_per_batch():
    loop = asyncio.new_event_loop()
    try:
        box = Outbox(loop)
        a = Transport([], "a")
        for _ in range(100):
            box.write(a, b".")
        loop.run_until_complete(asyncio.sleep(0))
        assert box.flushes == 1
        box.flush()  # nothing queued: no-op
        assert box.flushes == 1
    finally:
        loop.close()


def test_outbox_a_failing_socket_does_not_cost_the_others_their_data():
    loop = asyncio.new_event_loop()
    try:
        log: list = []
        box = Outbox(loop)

        class Broken(Transport):
            aborted = False

            def write(self, data):
                raise RuntimeError("handle is closed")

            def abort(self):
                self.aborted = True

        bad, good = Broken(log, "bad"), Transport(log, "good")
        box.write(bad, b"1")
        box.write(good, b"2")
        box.flush()
        assert bad.aborted and log == [("good", b"2")]
    finally:
        loop.close()
