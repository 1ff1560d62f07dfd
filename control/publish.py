"""Publishing: a CompiledTable becomes the ring's next generation.

The encoder is kept across publishes so unchanged virtual hosts and clusters
keep their encoded bytes. The generation is stamped into the table before it
is written, and is the one the ring assigns (``writer.generation + 1``): one
writer, so nothing can take that number in between.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass

from shm.codec import TableEncoder
from shm.ring import RingWriter
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
        """Encode and write; return the generation. Raises RingBusy to retry later."""
        return self.write(self.encode(table))

    def encode(self, table: CompiledTable) -> "Encoded":
        """The table as the ring's next generation (any thread: touches only the
        encoder; one encode at a time, and no write in between that it could miss)."""
        t0 = time.perf_counter()
        generation = self.writer.generation + 1
        data = self.encoder.encode(table, generation)
        return Encoded(data, generation, time.perf_counter() - t0,
                       self.encoder.reused, self.encoder.encoded)

    def write(self, encoded: "Encoded") -> int:
        """Write an encoded table into the ring (the ring's thread); return the
        generation. Raises RingBusy to retry later."""
        t0 = time.perf_counter()
        data, generation = encoded.data, encoded.generation
        got = self.writer.publish(data)
        assert got == generation, (got, generation)
        self.published += 1
        self.last_bytes = len(data)
        self.last_checksum = zlib.crc32(data)
        self.last_seconds = encoded.seconds + time.perf_counter() - t0
        log.info("published", extra={"fields": {
            "generation": generation, "bytes": len(data),
            "blobs_reused": encoded.reused, "blobs_encoded": encoded.encoded,
            "ms": round(self.last_seconds * 1000, 2)}})
        return generation


@dataclass(frozen=True)
class Encoded:
    """A table encoded for one generation, not yet written."""

    data: bytes
    generation: int
    seconds: float  # encoding took
    reused: int  # blobs kept from the last encode
    encoded: int
