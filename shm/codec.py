"""Encoding and decoding of the route table (msgpack via msgspec).

One Encoder and one Decoder per root type, built once at import: msgspec's
fast path. ``TableEncoder`` is stateful on purpose: it keeps the encoded bytes
of every virtual host and cluster, so a publish re-encodes only what changed
(an endpoint change re-encodes one cluster, not 5000 routes).
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import msgspec

from shm.schema import (
    SCHEMA_VERSION,
    BlobRef,
    Cluster,
    CompiledTable,
    Table,
    VirtualHost,
)

_encoder = msgspec.msgpack.Encoder()
_index_decoder = msgspec.msgpack.Decoder(Table)
_vhost_decoder = msgspec.msgpack.Decoder(VirtualHost)
_cluster_decoder = msgspec.msgpack.Decoder(Cluster)


class TableEncoder:
    """Encodes CompiledTables, re-using the bytes of unchanged blobs."""

    def __init__(self) -> None:
        # name -> (struct, BlobRef); a struct equal to the cached one keeps its bytes.
        self._vhosts: dict[str, tuple[VirtualHost, BlobRef]] = {}
        self._clusters: dict[str, tuple[Cluster, BlobRef]] = {}
        self.reused = 0  # blobs re-used by the last encode (for tests and metrics)
        self.encoded = 0  # blobs encoded by the last encode

    def encode(self, table: CompiledTable, generation: int) -> bytes:
        self.reused = self.encoded = 0
        vhosts = self._refs(table.vhosts, self._vhosts)
        clusters = self._refs(table.clusters, self._clusters)
        msg = Table(
            schema=SCHEMA_VERSION,
            generation=generation,
            listeners=table.listeners,
            vhosts=vhosts,
            clusters=clusters,
            created=time.time(),
            source=table.source,
        )
        return _encoder.encode(msg)

    def _refs(self, items, cache: dict) -> tuple[BlobRef, ...]:
        refs = []
        fresh = {}
        for item in items:
            hit = cache.get(item.name)
            if hit is not None and hit[0] == item:
                ref = hit[1]
                self.reused += 1
            else:
                data = _encoder.encode(item)
                ref = BlobRef(item.name, zlib.crc32(data), msgspec.Raw(data))
                self.encoded += 1
            fresh[item.name] = (item, ref)
            refs.append(ref)
        # Forget what is gone, so the cache tracks the live table only.
        cache.clear()
        cache.update(fresh)
        return tuple(refs)


def decode_index(buf: Any) -> Table:
    """Decode the index. ``buf`` may be a memoryview of shared memory: the
    returned blobs are zero-copy ``Raw`` views into it (pinning it)."""
    return _index_decoder.decode(buf)


def decode_vhost(raw: msgspec.Raw) -> VirtualHost:
    return _vhost_decoder.decode(raw)


def decode_cluster(raw: msgspec.Raw) -> Cluster:
    return _cluster_decoder.decode(raw)


def table_to_builtins(table: Table) -> dict:
    """The whole table as plain data (for /debug/config and golden files)."""
    return {
        "schema": table.schema,
        "generation": table.generation,
        "created": table.created,
        "source": table.source,
        "listeners": msgspec.to_builtins(table.listeners),
        "vhosts": [
            {"name": r.name, "digest": r.digest, **_named(decode_vhost(r.blob))}
            for r in table.vhosts
        ],
        "clusters": [
            {"name": r.name, "digest": r.digest, **_named(decode_cluster(r.blob))}
            for r in table.clusters
        ],
    }


def _named(struct: msgspec.Struct) -> dict:
    """A struct as a dict keyed by field name (array_like encodes positionally)."""
    return {
        f: msgspec.to_builtins(getattr(struct, f)) for f in struct.__struct_fields__
    }
