"""The index encoder: its pieced-together bytes are exactly what encoding the
``Table`` struct gives, at every msgpack array size class."""

from __future__ import annotations

import msgspec
import pytest

from shm import codec
from shm.schema import SCHEMA_VERSION, Cluster, CompiledTable, Endpoint, HostEntry, Listener, Table, VirtualHost


def _compiled(n: int) -> CompiledTable:
    vhosts = tuple(VirtualHost(name=f":80|h{i}.test") for i in range(n))
    exact = tuple(HostEntry(host=f"h{i}.test", vhost=i) for i in range(n))
    clusters = tuple(Cluster(name=f"ns/s{i}:80", endpoints=(Endpoint("127.0.0.1", 8000 + i),))
                     for i in range(min(n, 20)))
    return CompiledTable(listeners=(Listener(name=":80", address="", port=80, exact=exact),),
                         vhosts=vhosts, clusters=clusters, source="test")


@pytest.mark.parametrize("n", [0, 1, 15, 16, 5000, 65535, 65536])
def test_index_bytes_equal_the_encoded_table_struct(n, monkeypatch):
    monkeypatch.setattr(codec.time, "time", lambda: 1234.5)
    table = _compiled(n)
    got = codec.TableEncoder().encode(table, generation=7)
    refs = lambda items: tuple(  # noqa: E731
        codec.BlobRef(i.name, codec.zlib.crc32(b := msgspec.msgpack.encode(i)), msgspec.Raw(b)) for i in items)
    want = msgspec.msgpack.encode(Table(
        schema=SCHEMA_VERSION, generation=7, listeners=table.listeners, vhosts=refs(table.vhosts),
        clusters=refs(table.clusters), created=1234.5, source="test"))
    assert got == want
    index = codec.decode_index(got)
    assert len(index.vhosts) == n and index.listeners == table.listeners
    if n:
        assert codec.decode_vhost(index.vhosts[-1].blob) == table.vhosts[-1]


def test_encoder_forgets_gone_blobs_and_reencodes_only_changed_ones():
    encoder = codec.TableEncoder()
    encoder.encode(_compiled(10), 1)
    smaller = _compiled(6)
    changed = CompiledTable(listeners=smaller.listeners, source="test", clusters=smaller.clusters,
                            vhosts=smaller.vhosts[:5] + (VirtualHost(name=":80|h5.test", actions=()),
                                                         VirtualHost(name=":80|new.test")))
    index = codec.decode_index(encoder.encode(changed, 2))
    assert (encoder.reused, encoder.encoded) == (6 + 6, 1)  # 6 vhosts + 6 clusters kept; one new vhost
    assert [r.name for r in index.vhosts] == [v.name for v in changed.vhosts]
    assert sorted(encoder._vhosts) == sorted(v.name for v in changed.vhosts)
