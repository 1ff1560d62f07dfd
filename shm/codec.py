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
        "listeners": named(table.listeners),
        "vhosts": [{"digest": r.digest, **named(decode_vhost(r.blob))} for r in table.vhosts],
        "clusters": [{"digest": r.digest, **named(decode_cluster(r.blob))} for r in table.clusters],
    }


def named(value: Any) -> Any:
    """Structs → dicts by field name (tagged ones with their tag as ``type``).

    ``array_like`` structs encode positionally; people and golden files read
    field names, so every dump goes through here.
    """
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {}
        config = value.__struct_config__
        if config.tag is not None:
            out[config.tag_field] = config.tag
        for field in value.__struct_fields__:
            out[field] = named(getattr(value, field))
        return out
    if isinstance(value, (tuple, list)):
        return [named(v) for v in value]
    if isinstance(value, dict):
        return {k: named(v) for k, v in value.items()}
    return msgspec.to_builtins(value)
