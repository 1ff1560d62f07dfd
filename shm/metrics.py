"""Workers' counters in shared memory: exact across workers, kept across worker restarts.

Segment ``/fluxgate.S.metrics`` (made by the control process, one per shard)
holds one region per seat (two per worker slot: control/supervisor.py). A worker writes only its own region; the
control process reads every region at scrape time and sums them by labels.
A worker that takes a seat takes its region over and adds to it, so what a
dead worker counted is never lost and nothing fans out per scrape.

Region layout (little-endian u64 words):

  word 0          magic
  word 1          records in use (published last: a reader never sees a half-made record)
  word 2          heap bytes in use
  word 3..7       reserved
  records         MAX_RECORDS × RECORD_WORDS: [kind, heap offset << 32 | label bytes, values…]
  heap            label text: the record's labels, each NUL-terminated

Rules (what must stay true):
* One writer per region (the worker in that seat; a later one takes the seat
  only after its predecessor there is reaped). A record is written whole, then the count is
  raised: an aligned 8-byte store is atomic, so a reader sees the old count
  or the new one, and every record below the count is complete.
* Values only grow (counters, histogram buckets, sums), except the gauges a
  worker sets (its active connections), which the supervisor clears when it
  reaps the worker (``clear_gauges``) and its next writer resets.
* When the records or the heap are full, a new label set is counted in its
  kind's overflow record (labels all ``OVERFLOW``): counts stay exact in total,
  and ``fluxgate_metrics_overflow_total`` says that labels were lost.
"""

from __future__ import annotations

import mmap
import struct

import posix_ipc

MAGIC = 0x464C58474D455452  # "FLXGMETR"
HEADER_WORDS = 8
RECORD_WORDS = 24  # kind, label ref, then VALUE_WORDS values
VALUE_WORDS = RECORD_WORDS - 2
MAX_RECORDS = 4096
HEAP_BYTES = 256 * 1024
REGION_BYTES = (HEADER_WORDS + MAX_RECORDS * RECORD_WORDS) * 8 + HEAP_BYTES
OVERFLOW = "_overflow"

_HEAP_OFF = (HEADER_WORDS + MAX_RECORDS * RECORD_WORDS) * 8
_U64 = struct.Struct("<Q")


def segment_name(shard: str) -> str:
    return f"/fluxgate.{shard}.metrics"


class MetricsError(Exception):
    pass


class Segment:
    """The whole segment: created by the control process, attached by a worker."""

    def __init__(self, shard: str | None, slots: int, *, create: bool) -> None:
        if shard is None:  # a private mapping: one process's meters (tests of the data path)
            self.name, self.slots = "", slots
            self._map = mmap.mmap(-1, slots * REGION_BYTES)
            self.words = memoryview(self._map).cast("Q")
            self.closed = False
            self._known = {}
            return
        name = segment_name(shard)
        self.name = name
        self.slots = slots
        if create:
            try:
                posix_ipc.unlink_shared_memory(name)  # a crashed gateway's: counts start at zero
            except posix_ipc.ExistentialError:
                pass
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=slots * REGION_BYTES)
        else:
            try:
                shm = posix_ipc.SharedMemory(name)
            except posix_ipc.ExistentialError as exc:
                raise MetricsError(f"no metrics segment {name}: {exc}") from None
            if shm.size < slots * REGION_BYTES:
                shm.close_fd()
                raise MetricsError(f"metrics segment {name} is {shm.size} bytes, "
                                   f"{slots * REGION_BYTES} expected")
        try:
            self._map = mmap.mmap(shm.fd, slots * REGION_BYTES, mmap.MAP_SHARED)
        finally:
            shm.close_fd()
        self.words = memoryview(self._map).cast("Q")
        self.closed = False
        # The reader's: each region's records decoded so far. A record never
        # changes once counted (rule 1), so a scrape decodes only new ones.
        self._known: dict[int, list] = {}

    def known_records(self, index: int) -> list:
        """Region ``index``'s records ((kind, labels), first value word), decoded once each."""
        known = self._known.setdefault(index, [])
        region = self.region(index)
        if region.count() > len(known):
            known.extend(region.records(len(known)))
        return known

    def region(self, index: int) -> "Region":
        if not 0 <= index < self.slots:
            raise MetricsError(f"worker slot {index} is not in 0..{self.slots - 1}")
        return Region(self, index)

    def close(self, unlink: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.words.release()
        try:
            self._map.close()
        except BufferError:  # a view is still held (a test's); the mapping goes with the process
            pass
        if unlink and self.name:
            try:
                posix_ipc.unlink_shared_memory(self.name)
            except posix_ipc.ExistentialError:
                pass


class Region:
    """One worker slot's counters (``words`` is the segment's; ``base`` this region's first word)."""

    def __init__(self, segment: Segment, index: int) -> None:
        self.segment = segment
        self.words = segment.words
        self.base = index * (REGION_BYTES // 8)
        self._heap = self.base * 8 + _HEAP_OFF  # byte offset of this region's heap

    # --- the worker's side ---------------------------------------------------------

    def claim(self) -> dict[tuple, int]:
        """Start writing (a worker's start): the region initialised if new; returns
        every record already there, (kind, labels) → the word of its first value."""
        w, b = self.words, self.base
        if w[b] != MAGIC:
            for i in range(b, b + HEADER_WORDS):
                w[i] = 0
            w[b] = MAGIC
        return dict(self.records())

    def add(self, kind: int, labels: tuple[str, ...]) -> int:
        """A new record; returns the word of its first value, or -1 when full."""
        w, b = self.words, self.base
        n, used = w[b + 1], w[b + 2]
        text = "".join(label + "\0" for label in labels).encode()  # each NUL-terminated
        if n >= MAX_RECORDS or used + len(text) > HEAP_BYTES:
            return -1
        start = self._heap + used
        self.segment._map[start:start + len(text)] = text
        rec = b + HEADER_WORDS + n * RECORD_WORDS
        w[rec] = kind
        w[rec + 1] = used << 32 | len(text)
        for i in range(rec + 2, rec + RECORD_WORDS):
            w[i] = 0
        w[b + 2] = used + len(text)
        w[b + 1] = n + 1  # last: the record is whole before anyone can see it
        return rec + 2

    def clear_gauges(self) -> None:
        """The region's writer is dead (its supervisor reaped it): what it held
        open is gone. Only then may anyone but the writer store here."""
        for (kind, labels), first in self.records():
            if kind == CONNECTIONS:
                self.words[first + ACTIVE] = 0

    # --- the reader's side -------------------------------------------------------------

    def count(self) -> int:
        w, b = self.words, self.base
        return w[b + 1] if w[b] == MAGIC else 0

    def records(self, start: int = 0):
        """(kind, labels), first value word, for records ``start``… in use."""
        w, b = self.words, self.base
        for n in range(start, self.count()):
            rec = b + HEADER_WORDS + n * RECORD_WORDS
            ref = w[rec + 1]
            off, size = ref >> 32, ref & 0xFFFFFFFF
            text = bytes(self.segment._map[self._heap + off:self._heap + off + size]).decode()
            yield (w[rec], tuple(text.split("\0")[:-1])), rec + 2

    def values(self, first: int, n: int) -> list[int]:
        return self.words[first:first + n].tolist()


# --- the families: what each kind's labels and values are (both sides read this) --------

# Histogram bucket upper bounds in seconds (0.5 ms … 30 s); one more bucket for +Inf.
BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BUCKETS = len(BOUNDS) + 1

REQUEST = 1  # (gateway, route, method, status_class): count, µs sum, buckets, request bytes, response bytes
UPSTREAM = 2  # (route, backend): count, µs sum, buckets, retries
UPSTREAM_ERROR = 3  # (route, backend, reason): count
# (): active (a gauge), total, bytes in, bytes out, label sets overflowed, access
# log lines dropped, spans dropped (the channel to the control process was full;
# the control process counts what it exports or drops after that).
CONNECTIONS = 4

ARITY = {REQUEST: 4, UPSTREAM: 2, UPSTREAM_ERROR: 3, CONNECTIONS: 0}
WIDTH = {REQUEST: 2 + BUCKETS + 2, UPSTREAM: 2 + BUCKETS + 1, UPSTREAM_ERROR: 1, CONNECTIONS: 7}
# Value offsets within a record
COUNT, MICROS, BUCKET0 = 0, 1, 2
REQ_BYTES, RESP_BYTES = 2 + BUCKETS, 3 + BUCKETS
RETRIES = 2 + BUCKETS
ACTIVE, TOTAL, BYTES_IN, BYTES_OUT, OVERFLOWED, LOG_DROPPED, SPANS_DROPPED = range(7)

assert max(WIDTH.values()) <= VALUE_WORDS


def overflow_labels(kind: int) -> tuple[str, ...]:
    return (OVERFLOW,) * ARITY[kind]


def read_all(segment: Segment) -> tuple[dict[tuple[int, tuple[str, ...]], list[int]], list[int]]:
    """Every worker slot's records summed by (kind, labels), gauges as well
    (the caller knows which are gauges); and the requests each slot answered.
    A reader's snapshot: counts written meanwhile show in the next one."""
    out: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    per_slot = [0] * segment.slots
    words = segment.words
    for index in range(segment.slots):
        for key, first in segment.known_records(index):
            width = WIDTH.get(key[0])
            if width is None:
                continue
            values = words[first:first + width].tolist()
            if key[0] == REQUEST:
                per_slot[index] += values[COUNT]
            have = out.get(key)
            if have is None:
                out[key] = values
            else:
                for i, v in enumerate(values):
                    have[i] += v
    return out, per_slot
