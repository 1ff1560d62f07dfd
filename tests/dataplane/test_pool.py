"""The upstream keep-alive pool: LIFO reuse, bounds, idle sweep."""

from __future__ import annotations

from dataplane.upstream.pool import Pool


class Conn:
    def __init__(self, key=("127.0.0.1", 1)):
        self.key = key
        self.closed = False
        self.idle_since = 0.0

    def close(self):
        self.closed = True


def test_pool_reuses_the_most_recently_released_connection_first():
    pool = Pool(8, 60.0)
    a, b = Conn(), Conn()
    pool.release(a)
    pool.release(b)
    assert pool.acquire(a.key) is b
    assert pool.acquire(a.key) is a
    assert pool.acquire(a.key) is None
    assert pool.reused == 2


def test_pool_keeps_pools_apart_per_endpoint():
    pool = Pool(8, 60.0)
    pool.release(Conn(("127.0.0.1", 1)))
    assert pool.acquire(("127.0.0.1", 2)) is None


def test_pool_closes_connections_beyond_max_idle():
    pool = Pool(1, 60.0)
    a, b = Conn(), Conn()
    pool.release(a)
    pool.release(b)
    assert b.closed and not a.closed
    assert pool.idle_count() == 1


def test_pool_never_hands_out_a_closed_connection():
    pool = Pool(8, 60.0)
    a = Conn()
    pool.release(a)
    a.closed = True  # the upstream closed it while idle
    assert pool.acquire(a.key) is None


def test_pool_sweep_closes_connections_idle_too_long():
    pool = Pool(8, 10.0)
    old, fresh = Conn(), Conn()
    pool.sweep(now=100.0)
    pool.release(old)
    pool.sweep(now=105.0)
    pool.release(fresh)
    assert pool.sweep(now=111.0) == 1
    assert old.closed and not fresh.closed
    assert pool.acquire(old.key) is fresh


def test_pool_discard_and_close_all():
    pool = Pool(8, 60.0)
    a, b = Conn(), Conn()
    pool.release(a)
    pool.release(b)
    pool.discard(a)
    assert pool.idle_count() == 1
    pool.close_all()
    assert b.closed and pool.idle_count() == 0
