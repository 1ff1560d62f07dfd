"""Publishing: a CompiledTable becomes the ring's next generation.

The encoder is kept across publishes so unchanged virtual hosts and clusters
keep their encoded bytes. The generation is stamped into the table before it
is written, and is the one the ring assigns (``writer.generation + 1``): one
writer, so nothing can take that number in between.

Two steps, so the loop never copies a table: ``prepare`` (the build thread)
encodes and stages it in a free ring slot (a 100k-route table is tens of MB:
copying and verifying it on the loop stalled /healthz ~250 ms); ``write`` (the
loop) makes it current and is microseconds. A table prepared before another
write is refused by the ring (RingBusy: prepare again).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from shm.codec import TableEncoder
from shm.ring import RingWriter, Staged
from shm.schema import CompiledTable

log = logging.getLogger("fluxgate.publish")


class Publisher:
    def __init__(self, writer: RingWriter) -> None:
        self.writer = writer
        self.encoder = TableEncoder()
        self.published = 0
        self.last_bytes = 0
        self.last_checksum = 0
        self.last_seconds = 0.0

    def publish(self, table: CompiledTable) -> int:
        """Encode, stage and write; return the generation. Raises RingBusy to retry later."""
        return self.write(self.prepare(table))

    def prepare(self, table: CompiledTable) -> "Encoded":
        """The table encoded as the ring's next generation and staged (any
        thread, one prepare at a time: touches the encoder and a free slot).
        Raises RingBusy when no slot is free."""
        t0 = time.perf_counter()
        generation = self.writer.generation + 1
        data = self.encoder.encode(table, generation)
        t1 = time.perf_counter()
        staged = self.writer.stage(data)
        return Encoded(len(data), generation, staged, t1 - t0, time.perf_counter() - t1,
                       self.encoder.reused, self.encoder.encoded)

    def write(self, encoded: "Encoded") -> int:
        """Make a prepared table current (the loop); return the generation.
        Raises RingBusy if another write came between (prepare again)."""
        t0 = time.perf_counter()
        got = self.writer.commit(encoded.staged)
        assert got == encoded.generation, (got, encoded.generation)
        self.published += 1
        self.last_bytes = encoded.length
        self.last_checksum = encoded.staged.checksum
        self.last_seconds = encoded.seconds + encoded.stage_seconds + time.perf_counter() - t0
        log.info("published", extra={"fields": {
            "generation": got, "bytes": encoded.length,
            "blobs_reused": encoded.reused, "blobs_encoded": encoded.encoded,
            "ms": round(self.last_seconds * 1000, 2)}})
        return got


@dataclass(frozen=True)
class Encoded:
    """A table encoded and staged for one generation, not yet current."""

    length: int  # bytes
    generation: int
    staged: Staged
    seconds: float  # encoding took
    stage_seconds: float  # copying into the slot and verifying took
    reused: int  # blobs kept from the last encode
    encoded: int
