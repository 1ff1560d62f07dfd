"""shm/ring.py against real POSIX shared memory and real child processes."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time

import pytest

from shm import ring
from shm.ring import RingBusy, RingError, RingReader, RingWriter
from shm_ring_child import payload, shard_segments


def acquire_commit(reader: RingReader):
    snap = reader.acquire()
    assert snap is not None
    data = bytes(snap.view)
    reader.commit()
    return snap, data


# --- 1. basics -------------------------------------------------------------------


def test_roundtrip_publish_acquire_commit(shard, closing):
    w = closing(RingWriter(shard))
    r = closing(RingReader(shard, 0))
    table = payload(1)
    assert w.publish(table) == 1
    snap = r.acquire()
    assert snap is not None
    assert (snap.generation, bytes(snap.view)) == (1, table)
    assert snap.slot == w.slot
    r.commit()
    assert (r.generation, r.slot) == (1, snap.slot)
    assert w.current() == table
    entry = next(e for e in w.workers() if e.index == 0)
    assert (entry.pid, entry.slot, entry.prev, entry.generation) == (os.getpid(), snap.slot, -1, 1)


def test_generation_numbers_increase(shard, closing):
    w = closing(RingWriter(shard))
    r = closing(RingReader(shard, 0))
    seen = []
    for g in range(1, 9):
        assert w.publish(payload(g)) == g
        snap, data = acquire_commit(r)
        assert data == payload(g)
        seen.append(snap.generation)
    assert seen == list(range(1, 9))
    # A reader that missed several publishes goes straight to the newest one.
    for g in range(9, 14):
        w.publish(payload(g))
    snap, data = acquire_commit(r)
    assert (snap.generation, data) == (13, payload(13))


def test_staged_table_is_invisible_to_readers_until_committed(shard, closing):
    w = closing(RingWriter(shard))
    r = closing(RingReader(shard, 0))
    w.publish(payload(1))
    acquire_commit(r)
    staged = w.stage(payload(2))  # the build thread's half: the copy
    assert staged.slot != w.slot
    assert r.acquire() is None  # nothing new until the loop's half
    assert w.current() == payload(1)
    assert w.commit(staged) == 2
    snap, data = acquire_commit(r)
    assert (snap.generation, snap.slot, data) == (2, staged.slot, payload(2))


def test_stage_made_before_another_publish_is_refused(shard, closing):
    w = closing(RingWriter(shard))
    old = w.stage(payload(1))
    w.publish(payload(2))
    with pytest.raises(RingBusy, match="stage again"):
        w.commit(old)
    assert w.generation == 1 and w.current() == payload(2)


def test_stage_in_another_thread_while_the_loop_reads_worker_entries(shard, closing):
    w = closing(RingWriter(shard))
    r = closing(RingReader(shard, 0))
    big = payload(7) * 20000  # a few MB: the copy takes a while
    done = []
    t = threading.Thread(target=lambda: done.append(w.stage(big)))
    t.start()
    while t.is_alive():
        assert [e.index for e in w.workers()] == [0]
    t.join()
    assert w.commit(done[0]) == 1
    assert acquire_commit(r)[1] == big


def test_close_waits_for_a_stage_and_later_stages_are_refused(shard, closing):
    w = RingWriter(shard)
    big = payload(3) * 50000
    outcome = []

    def stage():
        try:
            outcome.append(w.stage(big))
        except RingError as exc:  # close came first
            outcome.append(exc)

    t = threading.Thread(target=stage)
    t.start()
    w.close()  # must not fail on the stage's view into a slot
    t.join()
    assert len(outcome) == 1
    with pytest.raises(RingError, match="closed"):
        w.stage(payload(4))


def test_acquire_returns_none_when_nothing_new(shard, closing):
    w = closing(RingWriter(shard))
    r = closing(RingReader(shard, 0))
    assert r.acquire() is None  # nothing published yet
    w.publish(b"one")
    assert r.changed()
    acquire_commit(r)
    assert r.acquire() is None
    assert not r.changed()
    assert r.acquire() is None
    w.publish(b"two")
    assert r.changed()
    snap, data = acquire_commit(r)
    assert (snap.generation, data) == (2, b"two")
    assert r.acquire() is None


def test_slot_grows_into_new_incarnation_and_readers_still_read_it(shard, closing):
    w = closing(RingWriter(shard, slots=2))
    r = closing(RingReader(shard, 0))
    w.publish(b"a" * 1000)  # slot 0, incarnation 0 (64 KiB)
    s1, _ = acquire_commit(r)  # the reader maps slot 0 incarnation 0
    w.publish(b"b" * 1000)  # slot 1
    acquire_commit(r)  # unpins slot 0
    assert s1.slot == 0 and shard_segments(shard) == {"hdr", "0.0", "1.0"}
    big = payload(10_000)  # 512 KiB cap: far beyond the 64 KiB slot
    big = big * (300_000 // len(big) + 1)
    w.publish(big)
    assert w.slot == 0
    # The grown slot is a new segment; the old incarnation is unlinked.
    assert shard_segments(shard) == {"hdr", "0.1", "1.0"}
    snap, data = acquire_commit(r)
    assert (snap.generation, snap.slot) == (3, 0)
    assert data == big
    # And a reader that never saw the small incarnation reads it too.
    r2 = closing(RingReader(shard, 1))
    assert acquire_commit(r2)[1] == big


def test_writer_refuses_shard_owned_by_live_writer(shard, spawn):
    child = spawn("writer", shard)
    child.ready()
    before = shard_segments(shard)
    with pytest.raises(RingError, match="already served"):
        RingWriter(shard)
    assert shard_segments(shard) == before  # nothing of the live writer was removed
    assert child.proc.poll() is None


def test_writer_cleans_up_stale_segments_of_killed_writer(shard, spawn, closing):
    child = spawn("writer", shard)
    generation, names = child.ready()
    # hdr, two grown slots (incarnation 1) and an orphan the header does not list.
    assert set(names.split(",")) == {"hdr", "0.1", "1.1", "1.7"}
    child.kill_and_reap()
    assert shard_segments(shard) == {"hdr", "0.1", "1.1", "1.7"}  # SIGKILL cleans nothing

    w = closing(RingWriter(shard, slots=2))
    assert shard_segments(shard) == {"hdr"}
    assert w.publish(b"fresh") == 1
    r = closing(RingReader(shard, 0))
    snap, data = acquire_commit(r)
    assert (snap.generation, data) == (1, b"fresh")
    assert shard_segments(shard) == {"hdr", "0.0"}


def test_writer_takes_over_shard_of_hung_writer(shard, spawn, closing):
    child = spawn("writer", shard)
    child.ready()
    time.sleep(0.3)  # the child never heart-beats again
    w = closing(RingWriter(shard, hung_after=0.2))
    assert shard_segments(shard) == {"hdr"}
    w.publish(b"mine")
    assert w.current() == b"mine"


def test_writer_rejects_bad_slot_count(shard):
    for slots in (0, 1, ring.MAX_SLOTS + 1):
        with pytest.raises(RingError):
            RingWriter(shard, slots=slots)


def test_schema_mismatch_raises_ring_error(shard, closing):
    w = closing(RingWriter(shard, schema=2))
    r = closing(RingReader(shard, 0, schema=1))
    assert r.acquire() is None  # no table yet: nothing to disagree about
    w.publish(b"v2 table")
    with pytest.raises(RingError, match="schema"):
        r.acquire()
    assert w.pinned_slots() == set()  # a refused table is not pinned
    ok = closing(RingReader(shard, 1, schema=2))
    assert acquire_commit(ok)[1] == b"v2 table"


def test_reader_rejects_segment_without_magic(shard, closing):
    import posix_ipc

    name = f"/fluxgate.{shard}.hdr"
    posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=ring.HEADER_BYTES).close_fd()
    with pytest.raises(RingError, match="magic"):
        RingReader(shard, 0)


def test_close_unlink_leaves_no_segments(shard, closing):
    w = RingWriter(shard, slots=3)
    try:
        r = closing(RingReader(shard, 0))
        for g in range(1, 40):  # sizes up to 512 KiB: several slots grow
            w.publish(payload(g * 40))
            if g % 3 == 0:
                acquire_commit(r)
        assert len(shard_segments(shard)) == 4  # hdr + one incarnation per slot
        assert any(not k.endswith(".0") for k in shard_segments(shard) - {"hdr"})
    finally:
        w.close(unlink=True)
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"fluxgate.{shard}.")]
    w.close()  # idempotent


def test_close_without_unlink_keeps_segments(shard):
    w = RingWriter(shard)
    try:
        w.publish(b"kept")
    finally:
        w.close(unlink=False)
    assert shard_segments(shard) == {"hdr", "0.0"}  # the shard fixture unlinks them


# --- bugs found (see the report) ------------------------------------------------


def test_writer_cleanup_leaves_other_shards_alone(new_shard, closing):
    """A writer for shard "X" must not unlink the segments of a live shard "X.b".

    '.' is legal in a shard name (control/config.py _SHARD_RE), and every name of
    shard "X.b" starts with "fluxgate.X.", the prefix _claim_shard sweeps.
    """
    base = new_shard()
    other = new_shard(base + ".b")
    wo = closing(RingWriter(other))
    wo.publish(b"other shard's table")
    before = shard_segments(other)
    assert before == {"hdr", "0.0"}
    closing(RingWriter(base))
    assert shard_segments(other) == before
    ro = closing(RingReader(other, 0))  # raises if the header was unlinked
    assert acquire_commit(ro)[1] == b"other shard's table"


def test_publish_empty_table(shard, closing):
    """publish(b"") into a slot that was never created hits memoryview(None)."""
    w = closing(RingWriter(shard))
    r = closing(RingReader(shard, 0))
    assert w.publish(b"") == 1
    snap, data = acquire_commit(r)
    assert (snap.generation, data) == (1, b"")


def test_reader_close_unmaps_header(shard, closing):
    """RingReader.close() closes slot mappings and the lock fd but not its header mapping."""
    w = closing(RingWriter(shard))
    w.publish(b"t")
    r = RingReader(shard, 0)
    acquire_commit(r)
    r.close()
    w.close(unlink=True)
    with open("/proc/self/maps") as f:
        mapped = [line for line in f if f"/fluxgate.{shard}." in line]
    assert mapped == []


# --- 2. pinning ------------------------------------------------------------------


def test_pinned_generation_is_never_rewritten(shard, closing):
    w = closing(RingWriter(shard, slots=5))
    r = closing(RingReader(shard, 0))  # committed: pins one slot
    swapping = closing(RingReader(shard, 1))  # mid-swap: pins two slots
    w.publish(payload(1))
    held = r.acquire()
    r.commit()
    w.publish(payload(2))
    acquire_commit(swapping)
    w.publish(payload(3))
    mid = swapping.acquire()  # generation 3, with generation 2 still pinned as prev
    assert (held.generation, mid.generation) == (1, 3)
    protected = {held.slot, mid.slot, swapping.slot}
    assert len(protected) == 3 and w.pinned_slots() == protected
    # 3 of 5 slots pinned: every publish must go to the two others, which grow
    # several times (sizes ramp up to 512 KiB).
    for g in range(4, 604):
        w.publish(payload(g))
        assert w.slot not in protected
    assert bytes(held.view) == payload(1)
    assert bytes(mid.view) == payload(3)
    assert w.current() == payload(603)
    # The pinned slots kept their first incarnation; the free one grew.
    segs = shard_segments(shard)
    assert {f"{k}.0" for k in protected} <= segs
    assert len(segs) == 6
    held.view.release()
    mid.view.release()


def test_all_slots_pinned_raises_ring_busy(shard, closing):
    w = closing(RingWriter(shard, slots=3))
    a = closing(RingReader(shard, 0))
    b = closing(RingReader(shard, 1))
    w.publish(b"g1")
    sa, _ = acquire_commit(a)
    w.publish(b"g2")
    sb, _ = acquire_commit(b)
    w.publish(b"g3")
    assert w.pinned_slots() == {sa.slot, sb.slot}
    assert w.slot not in {sa.slot, sb.slot}
    with pytest.raises(RingBusy):
        w.publish(b"g4")
    assert issubclass(RingBusy, RingError)
    # A refused publish changes nothing.
    assert (w.generation, w.current()) == (3, b"g3")
    # Once reader a moves on, its old slot is free again.
    s3, _ = acquire_commit(a)
    assert w.publish(b"g4") == 4
    assert w.slot == sa.slot
    assert acquire_commit(b)[1] == b"g4"


def test_reader_killed_while_pinning_does_not_block_writer(shard, spawn, closing):
    w = closing(RingWriter(shard, slots=2))
    w.publish(b"g1")  # slot 0
    child = spawn("pin", shard, 0)
    gen, slot = map(int, child.ready())
    assert (gen, slot) == (1, 0)
    w.publish(b"g2")  # slot 1
    assert w.pinned_slots() == {0}
    with pytest.raises(RingBusy):
        w.publish(b"g3")  # slot 0 is the only non-current slot, and it is pinned
    child.kill_and_reap()
    assert w.pinned_slots() == set()
    assert w.publish(b"g3") == 3
    assert w.slot == 0  # into the dead reader's slot
    r = closing(RingReader(shard, 1))
    assert acquire_commit(r)[1] == b"g3"


def test_reader_killed_holding_flock_does_not_block_writer(shard, spawn, closing):
    w = closing(RingWriter(shard, slots=2))
    w.publish(b"g1")
    child = spawn("flock", shard)
    child.ready()
    probe = ring._open_lock_fd(shard)
    try:
        with pytest.raises(BlockingIOError):  # the child really holds it
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        child.kill_and_reap()
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel dropped it
        fcntl.flock(probe, fcntl.LOCK_UN)
    finally:
        os.close(probe)
    # publish() takes the lock blocking; run it where a hang cannot hang the suite.
    result = {}
    t = threading.Thread(target=lambda: result.update(gen=w.publish(b"g2")), daemon=True)
    t.start()
    t.join(timeout=20)
    assert result.get("gen") == 2
    r = closing(RingReader(shard, 0))
    assert acquire_commit(r)[1] == b"g2"


def test_worker_entry_updates_never_unpin_a_live_reader(shard, spawn, closing, tmp_path):
    """heartbeat()/commit() rewrite the entry without the flock, via struct.pack_into.

    CPython's pack_into first zeroes the whole field range (s_pack_internal
    memsets it) and then writes field by field, so a writer that reads the entry
    meanwhile sees pid 0, heartbeat 0.0 or slot/prev 0 -- no pin -- and may
    rewrite the slot the reader is serving from.
    """
    w = closing(RingWriter(shard, slots=3))
    w.publish(payload(1))  # slot 0
    w.publish(payload(2))  # slot 1: the reader holds this one (not slot 0, which
    # a zeroed slot field would pin by accident)
    stop = tmp_path / "stop"
    child = spawn("churn", shard, 0, stop, 15)
    gen, held = map(int, child.ready())
    assert (gen, held) == (2, 1)
    into_held = publishes = 0
    deadline = time.monotonic() + 4.0
    try:
        while publishes < 40_000 and time.monotonic() < deadline:
            try:
                w.publish(payload(3 + publishes % 50))
            except RingBusy:
                continue  # cannot happen with one reader on 3 slots
            publishes += 1
            if w.slot == held:
                into_held += 1
                break
    finally:
        stop.write_text("stop")
    result = json.loads(child.readline(timeout=30))
    assert result["rewrites"] > 0
    assert into_held == 0, f"published into the held slot after {publishes} publishes"
    assert result["intact"], "the reader's table was overwritten"


def test_hung_reader_no_longer_pins(shard, closing):
    w = closing(RingWriter(shard, slots=2))
    r = closing(RingReader(shard, 0))
    w.publish(b"g1")
    acquire_commit(r)
    assert w.pinned_slots() == {0}
    time.sleep(0.1)
    w.hung_after = 0.05  # the reader's last heartbeat is older than this
    assert w.pinned_slots() == set()
    w.hung_after = 3600.0
    assert w.pinned_slots() == {0}
    w.hung_after = 0.05
    w.publish(b"g2")
    w.publish(b"g3")  # into slot 0, which the hung reader had pinned
    assert w.slot == 0


def test_reset_worker_clears_pins(shard, closing):
    w = closing(RingWriter(shard, slots=2))
    r = closing(RingReader(shard, 3))
    w.publish(b"g1")
    acquire_commit(r)
    w.publish(b"g2")
    assert w.pinned_slots() == {0}
    w.reset_worker(3)  # the supervisor reaped worker 3
    assert w.pinned_slots() == set()
    assert [e.index for e in w.workers()] == []
    w.publish(b"g3")
    assert w.slot == 0
