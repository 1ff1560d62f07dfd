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


class _TableWire(msgspec.Struct, array_like=True):
    """``Table`` as the encoder writes it: the same positional layout, with
    the three long arrays already encoded (``Raw``), so the index is put
    together in short steps instead of one C call over 100k blobs (a GIL hold
    of 12-70 ms at 100k routes: the admin loop stalls behind it)."""

    schema: int
    generation: int
    listeners: msgspec.Raw
    vhosts: msgspec.Raw
    clusters: msgspec.Raw
    created: float
    source: str


_JOIN_STEP = 4096  # encoded refs joined per step (one short GIL hold each)


class TableEncoder:
    """Encodes CompiledTables, re-using the bytes of unchanged blobs."""

    def __init__(self) -> None:
        # name -> (struct, BlobRef, the BlobRef encoded); an equal struct keeps its bytes.
        self._vhosts: dict[str, tuple[VirtualHost, BlobRef, bytes]] = {}
        self._clusters: dict[str, tuple[Cluster, BlobRef, bytes]] = {}
        self.reused = 0  # blobs re-used by the last encode (for tests and metrics)
        self.encoded = 0  # blobs encoded by the last encode

    def encode(self, table: CompiledTable, generation: int) -> bytes:
        self.reused = self.encoded = 0
        msg = _TableWire(
            schema=SCHEMA_VERSION,
            generation=generation,
            listeners=msgspec.Raw(_encoder.encode(table.listeners)),
            vhosts=msgspec.Raw(_array(self._refs(table.vhosts, self._vhosts))),
            clusters=msgspec.Raw(_array(self._refs(table.clusters, self._clusters))),
            created=time.time(),
            source=table.source,
        )
        return _encoder.encode(msg)

    def _refs(self, items, cache: dict) -> list[bytes]:
        # The cache is updated in place: an edit of one route at 100k makes
        # one new entry, not 100k new tuples for the collector to walk.
        out = []
        for item in items:
            hit = cache.get(item.name)
            if hit is not None and hit[0] == item:
                self.reused += 1
            else:
                data = _encoder.encode(item)
                ref = BlobRef(item.name, zlib.crc32(data), msgspec.Raw(data))
                hit = cache[item.name] = (item, ref, _encoder.encode(ref))
                self.encoded += 1
            out.append(hit[2])
        if len(cache) > len(out):
            # Forget what is gone (names are unique), so the cache tracks the live table only.
            live = {item.name for item in items}
            for name in [name for name in cache if name not in live]:
                del cache[name]
        return out


def _array(encoded: list[bytes]) -> bytes:
    """A msgpack array of already encoded items, joined a step at a time."""
    n = len(encoded)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return b"".join([head] + [b"".join(encoded[i:i + _JOIN_STEP]) for i in range(0, n, _JOIN_STEP)])


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
