"""The shared-memory ring: one writer (the control process), N readers (workers).

Segments of shard S (POSIX shared memory, posix-ipc):

* ``/fluxgate.S.hdr``    the header: which slot holds the current table, and one
                        entry per worker (what it pins, what it uses, heartbeat).
* ``/fluxgate.S.K.I``    slot K, incarnation I. A slot that must grow is re-created
                        under a new incarnation (readers keep their old mapping
                        until they let go of it; unlinking does not unmap).

Rules (each is what makes torn reads impossible, not unlikely):

1. The writer never writes the *current* slot, nor a slot that a live worker
   pins. It fills a free slot, verifies it byte for byte, then flips the header.
2. The header's table fields are under a seqlock: the writer makes ``seq`` odd,
   writes, makes it even. A reader that sees an odd or a changed ``seq`` retries.
3. A reader pins only the slot that is current, and pinning happens under an
   ``flock`` on the header that the writer also holds while choosing a slot. So
   either the writer sees the pin, or the reader sees the flip and pins the new
   slot. ``flock`` is a syscall (a full barrier), and the kernel drops it when a
   process dies: a reader killed mid-pin cannot block the writer.
4. A reader verifies the CRC-32 of the slot once per generation before using it.
5. A worker pins two slots while it swaps (``slot`` and ``prev``) and drops
   ``prev`` only after it let go of every view into the old slot.
6. A pin counts only while its worker is alive and heart-beating; the
   supervisor clears the entry of a worker it reaped.
7. Shared memory is written one whole record per copy (``_store``), never with
   ``struct.pack_into``: CPython zeroes the range before packing, and a reader
   in that instant would see a pinned slot as free. Worker entries are written
   and read under the lock, so none is ever seen half-written.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass

import posix_ipc

MAGIC = b"FLUXGATE"
LAYOUT = 2
MAX_SLOTS = 16
MAX_WORKERS = 256
MIN_SLOT_BYTES = 64 * 1024
_COPY_SLICE = 1 << 20  # bytes copied per GIL hold when staging

# magic, layout, schema, seq, generation, slot, nslots, length, checksum, writer pid, writer hb
_HDR = struct.Struct("<8sIIQQIIQIId")  # 64 bytes
_SEQ_OFF = 16
_SLOT = struct.Struct("<IIQQ")  # incarnation, unused, size, generation: 24 bytes
_SLOTS_OFF = 64
# pid, slot, prev, checksum (of the table in use), generation, heartbeat,
# requests, integrity errors found: 48 bytes, 8-aligned
_WORKER = struct.Struct("<IiiIQdQQ")
_WORKER_BEAT = struct.Struct("<dQ")  # heartbeat and requests, at +24
_WORKER_INTEGRITY = 40
_WORKERS_OFF = _SLOTS_OFF + MAX_SLOTS * _SLOT.size
HEADER_BYTES = _WORKERS_OFF + MAX_WORKERS * _WORKER.size
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


class RingError(Exception):
    """The ring cannot be used (another writer owns the shard, a bad layout)."""


class RingBusy(RingError):
    """Every slot is current or pinned by a live worker: publish again later."""


@dataclass(frozen=True)
class WorkerEntry:
    index: int
    pid: int
    slot: int
    prev: int
    generation: int
    heartbeat: float
    requests: int
    checksum: int = 0  # of the table the worker serves (the slot's CRC-32 it verified)
    integrity: int = 0  # corrupted bytes it found and refused, ever (the control republishes)


@dataclass(frozen=True)
class Snapshot:
    """The current table as a reader sees it: ``view`` is the slot's bytes."""

    generation: int
    slot: int
    checksum: int
    view: memoryview


def segment_prefix(shard: str) -> str:
    return f"/fluxgate.{shard}."


def _header_name(shard: str) -> str:
    return segment_prefix(shard) + "hdr"


def _slot_name(shard: str, slot: int, incarnation: int) -> str:
    return f"{segment_prefix(shard)}{slot}.{incarnation}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _map(name: str, size: int, *, create: bool = False, write: bool = False) -> mmap.mmap:
    flags = posix_ipc.O_CREX if create else 0
    shm = posix_ipc.SharedMemory(name, flags, size=size if create else 0)
    try:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if write or create else 0)
        return mmap.mmap(shm.fd, size or shm.size, mmap.MAP_SHARED, prot)
    finally:
        shm.close_fd()


def _store(buf, off: int, st: struct.Struct, *values) -> None:
    """Write ``values`` at ``off`` in one copy. Never ``st.pack_into`` on shared
    memory: CPython zeroes the whole range first, so a concurrent reader sees
    fields that are not changing (pid, slot, heartbeat, seq) as 0."""
    buf[off : off + st.size] = st.pack(*values)


def _unlink(name: str) -> None:
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass


class _Locked:
    """flock on the header segment's file descriptor (see rule 3), and a
    thread lock: an flock belongs to the open file description, which the
    threads of one process share (the writer stages in the build thread while
    the loop reads worker entries), so one thread's unlock would end the
    other's exclusion."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._thread = threading.Lock()

    def __enter__(self) -> None:
        self._thread.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise

    def __exit__(self, *exc) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()


def _open_lock_fd(shard: str) -> int:
    # A separate open file description per process: flock excludes across them.
    shm = posix_ipc.SharedMemory(_header_name(shard))
    try:
        return os.dup(shm.fd)
    finally:
        shm.close_fd()


@dataclass(frozen=True)
class Staged:
    """A table written into a free slot and verified, not yet current (``RingWriter.stage``)."""

    slot: int
    incarnation: int
    length: int
    checksum: int
    after: int  # the generation current when it was staged: commit follows that one only


class RingWriter:
    """The control process's side; one per shard.

    One thread at a time publishes, in two steps: ``stage`` (fill and verify a
    free slot: the copy of a large table, off the loop) and ``commit`` (flip
    the header: microseconds, on the loop). Between them the staged slot is
    neither current nor pinned (workers pin only the current slot, rule 3),
    so nothing else touches it. ``close`` waits for a stage in progress."""

    def __init__(
        self,
        shard: str,
        *,
        slots: int = 4,
        schema: int = 1,
        hung_after: float = 10.0,
    ) -> None:
        if not 2 <= slots <= MAX_SLOTS:
            raise RingError(f"ring slots must be between 2 and {MAX_SLOTS}, got {slots}")
        self.shard = shard
        self.nslots = slots
        self.schema = schema
        self.hung_after = hung_after
        self._claim_shard()
        self._hdr = _map(_header_name(shard), HEADER_BYTES, create=True)
        self._lock_fd = _open_lock_fd(shard)
        self._lock = _Locked(self._lock_fd)
        _store(self._hdr, 0, _HDR, MAGIC, LAYOUT, schema, 0, 0, 0, slots, 0, 0, os.getpid(), time.monotonic())
        self._slots: list[mmap.mmap | None] = [None] * slots
        self._sizes = [0] * slots
        self._incarnations = [0] * slots
        self._gen_in_slot = [0] * slots
        self.generation = 0
        self.slot = -1
        self.published_at = 0.0  # monotonic time of the last publish
        self.closed = False
        self._staging = threading.Lock()

    # --- start-up -------------------------------------------------------------

    def _claim_shard(self) -> None:
        """Refuse a shard another live writer owns; else remove its stale segments."""
        name = _header_name(self.shard)
        try:
            old = _map(name, 0)
        except posix_ipc.ExistentialError:
            old = None
        if old is not None:
            try:
                fields = _HDR.unpack_from(old, 0) if len(old) >= _HDR.size else None
                if fields and fields[0] == MAGIC:
                    pid, beat = fields[9], fields[10]
                    fresh = time.monotonic() - beat < self.hung_after
                    if pid != os.getpid() and _pid_alive(pid) and fresh:
                        raise RingError(
                            f"shard {self.shard!r} is already served by pid {pid}; "
                            "set FLUXGATE_SHARD to run another gateway on this host"
                        )
                    for k in range(min(fields[6], MAX_SLOTS)):
                        inc = _SLOT.unpack_from(old, _SLOTS_OFF + k * _SLOT.size)[0]
                        _unlink(_slot_name(self.shard, k, inc))
            finally:
                old.close()
            _unlink(name)
        # Names a crashed writer may have left that the header no longer lists:
        # exactly "<prefix>K.I" -- shard "a" must not touch shard "a.b"'s names.
        prefix = segment_prefix(self.shard)[1:]
        mine = re.compile(re.escape(prefix) + r"[0-9]+\.[0-9]+")
        try:
            for entry in os.listdir("/dev/shm"):
                if mine.fullmatch(entry):
                    _unlink("/" + entry)
        except OSError:
            pass

    # --- publishing -----------------------------------------------------------

    def publish(self, data: bytes) -> int:
        """Write ``data`` as the next generation; return that generation."""
        return self.commit(self.stage(data))

    def stage(self, data: bytes) -> Staged:
        """Fill a free slot with ``data`` and verify it (any one thread; see the
        class). Raises RingBusy when every slot is current or pinned."""
        with self._staging:
            if self.closed:
                raise RingError("the ring writer is closed")
            with self._lock:
                slot = self._choose_slot()
            view = self._slot_view(slot, len(data))
            try:
                # In slices: one copy of a 16 MB table (page faults on a new
                # slot included) holds the GIL for 10-120 ms; between slices
                # the loop may take it.
                src, n = memoryview(data), len(data)
                for off in range(0, n, _COPY_SLICE):
                    end = min(off + _COPY_SLICE, n)
                    view[off:end] = src[off:end]
                src.release()
                checksum = zlib.crc32(data)
                if zlib.crc32(view[: len(data)]) != checksum:  # verify before flipping
                    raise RingError(f"slot {slot} did not read back what was written")
            finally:
                view.release()
            return Staged(slot, self._incarnations[slot], len(data), checksum, self.generation)

    def commit(self, staged: Staged) -> int:
        """Make a staged table current; return its generation."""
        if self.closed:
            raise RingError("the ring writer is closed")
        slot = staged.slot
        if staged.after != self.generation or staged.incarnation != self._incarnations[slot]:
            raise RingBusy(f"slot {slot} was staged before generation {self.generation}: stage again")
        generation = self.generation + 1
        self._gen_in_slot[slot] = generation
        hdr = self._hdr
        seq = _U64.unpack_from(hdr, _SEQ_OFF)[0]
        _store(hdr, _SEQ_OFF, _U64, seq + 1)  # odd: readers retry
        _store(
            hdr, 0, _HDR, MAGIC, LAYOUT, self.schema, seq + 1, generation, slot,
            self.nslots, staged.length, staged.checksum, os.getpid(), time.monotonic(),
        )
        _store(
            hdr, _SLOTS_OFF + slot * _SLOT.size, _SLOT,
            self._incarnations[slot], 0, self._sizes[slot], generation,
        )
        _store(hdr, _SEQ_OFF, _U64, seq + 2)  # even: consistent
        self.generation = generation
        self.slot = slot
        self.published_at = time.monotonic()
        return generation

    def _choose_slot(self) -> int:
        """The least recently written slot that is neither current nor pinned."""
        pinned = self.pinned_slots()
        free = [k for k in range(self.nslots) if k != self.slot and k not in pinned]
        if not free:
            raise RingBusy(
                f"all {self.nslots} ring slots are current or pinned by live workers"
            )
        return min(free, key=lambda k: self._gen_in_slot[k])

    def pinned_slots(self) -> set[int]:
        """Slots live workers pin. The caller holds the lock (rule 3)."""
        now = time.monotonic()
        pinned = set()
        for e in self._entries():
            if e.pid and now - e.heartbeat < self.hung_after and _pid_alive(e.pid):
                pinned.update(k for k in (e.slot, e.prev) if k >= 0)
        return pinned

    def _slot_view(self, slot: int, length: int) -> memoryview:
        if self._slots[slot] is None or self._sizes[slot] < length:
            size = max(MIN_SLOT_BYTES, self._sizes[slot] * 2)
            while size < length:
                size *= 2
            old = self._slots[slot]
            if old is not None:
                old.close()
                _unlink(_slot_name(self.shard, slot, self._incarnations[slot]))
                self._incarnations[slot] += 1
            self._slots[slot] = _map(
                _slot_name(self.shard, slot, self._incarnations[slot]), size, create=True
            )
            self._sizes[slot] = size
        return memoryview(self._slots[slot])

    def heartbeat(self) -> None:
        _store(self._hdr, 56, _F64, time.monotonic())

    @property
    def checksum(self) -> int:
        """CRC-32 of the current table (0 before the first publish)."""
        return _HDR.unpack_from(self._hdr, 0)[8]

    def current(self) -> bytes:
        """A copy of the current table's bytes (b"" before the first publish)."""
        if self.slot < 0:
            return b""
        length = _HDR.unpack_from(self._hdr, 0)[7]
        return bytes(self._slots[self.slot][:length])

    # --- worker entries (owned by the supervisor) -------------------------------

    def workers(self) -> list[WorkerEntry]:
        """Every worker entry in use, read under the lock so none is half-written."""
        with self._lock:
            return self._entries()

    def _entries(self) -> list[WorkerEntry]:
        out = []
        for i in range(MAX_WORKERS):
            pid, slot, prev, crc, gen, beat, reqs, bad = _WORKER.unpack_from(
                self._hdr, _WORKERS_OFF + i * _WORKER.size
            )
            if pid:
                out.append(WorkerEntry(i, pid, slot, prev, gen, beat, reqs, crc, bad))
        return out

    def reset_worker(self, index: int, pid: int = 0) -> None:
        """Give entry ``index`` to ``pid`` (0: free it). Clears its pins."""
        _store(
            self._hdr, _WORKERS_OFF + index * _WORKER.size, _WORKER,
            pid, -1, -1, 0, 0, time.monotonic(), 0, 0,
        )

    def close(self, unlink: bool = True) -> None:
        with self._staging:  # a stage in progress holds a view into a slot
            if self.closed:
                return
            self.closed = True
        for k, m in enumerate(self._slots):
            if m is not None:
                m.close()
                if unlink:
                    _unlink(_slot_name(self.shard, k, self._incarnations[k]))
        self._hdr.close()
        os.close(self._lock_fd)
        if unlink:
            _unlink(_header_name(self.shard))


class RingReader:
    """A worker's side: notice a new generation, pin it, verify it, map it."""

    def __init__(self, shard: str, index: int, *, schema: int = 1) -> None:
        if not 0 <= index < MAX_WORKERS:
            raise RingError(f"worker index {index} out of range")
        self.shard = shard
        self.index = index
        self.schema = schema
        try:
            self._hdr = _map(_header_name(shard), HEADER_BYTES, write=True)
        except posix_ipc.ExistentialError:
            raise RingError(f"shard {shard!r}: no ring header (is the control process running?)") from None
        if bytes(self._hdr[:8]) != MAGIC:
            raise RingError(f"shard {shard!r}: header has no FluxGate magic")
        self._lock_fd = _open_lock_fd(shard)
        self._lock = _Locked(self._lock_fd)
        self._off = _WORKERS_OFF + index * _WORKER.size
        # slot -> (incarnation, mmap); kept across generations, re-mapped on resize.
        self._maps: dict[int, tuple[int, mmap.mmap]] = {}
        self._retired: list[mmap.mmap] = []
        self._seen_seq = -1
        self.generation = 0  # in use (reported)
        self.checksum = 0  # of the generation in use (reported)
        self.slot = -1
        self.requests = 0
        self.integrity = 0  # corruptions found (reported: the control process republishes)
        self._write_entry(-1, -1, 0)

    def _write_entry(self, slot: int, prev: int, generation: int) -> None:
        _store(
            self._hdr, self._off, _WORKER, os.getpid(), slot, prev, self.checksum, generation,
            time.monotonic(), self.requests, self.integrity,
        )

    def report_integrity(self) -> None:
        """Tell the control process that bytes of the table failed their checksum."""
        self.integrity += 1
        with self._lock:
            _store(self._hdr, self._off + _WORKER_INTEGRITY, _U64, self.integrity)

    def _read_header(self) -> tuple:
        """A consistent copy of the header's table fields (seqlock read)."""
        hdr = self._hdr
        deadline = time.monotonic() + 1.0
        while True:
            s1 = _U64.unpack_from(hdr, _SEQ_OFF)[0]
            if s1 & 1:
                # A flip takes microseconds; odd for a second means the writer
                # died mid-flip. Refuse rather than spin forever.
                if time.monotonic() > deadline:
                    raise RingError("ring header stuck mid-update (writer died?)")
                time.sleep(0)
                continue
            fields = _HDR.unpack_from(hdr, 0)
            slot = fields[5]
            slot_fields = _SLOT.unpack_from(hdr, _SLOTS_OFF + slot * _SLOT.size)
            if _U64.unpack_from(hdr, _SEQ_OFF)[0] == s1:
                return fields, slot_fields

    def changed(self) -> bool:
        """Cheap poll: has the writer flipped since we last looked?"""
        return _U64.unpack_from(self._hdr, _SEQ_OFF)[0] != self._seen_seq

    def writer_pid(self) -> int:
        return _HDR.unpack_from(self._hdr, 0)[9]

    def acquire(self) -> Snapshot | None:
        """Pin and verify the current generation if it is new, else None.

        The caller builds its router from ``Snapshot.view``, drops everything
        that refers to the previous snapshot, then calls ``commit()``.
        """
        with self._lock:
            fields, slot_fields = self._read_header()
            seq = fields[3]
            generation, slot, length, checksum = fields[4], fields[5], fields[7], fields[8]
            if generation == 0 or generation == self.generation:
                self._seen_seq = seq
                return None
            if fields[2] != self.schema:
                raise RingError(
                    f"table schema {fields[2]} differs from this worker's {self.schema}"
                )
            # Pin the new slot, keep the old one pinned until commit().
            self._write_entry(slot, self.slot, self.generation)
        incarnation, size = slot_fields[0], slot_fields[2]
        m = self._mapping(slot, incarnation, size)
        view = memoryview(m)[:length]
        if zlib.crc32(view) != checksum:
            # Cannot happen while rules 1-3 hold; refuse rather than serve garbage.
            view.release()
            self.integrity += 1
            with self._lock:
                self._write_entry(self.slot, -1, self.generation)
            raise RingError(f"generation {generation}: checksum mismatch in slot {slot}")
        self._seen_seq = seq
        self._pending = (slot, generation, checksum)
        return Snapshot(generation, slot, checksum, view)

    def commit(self) -> None:
        """The previous snapshot is no longer referenced: unpin it, report the new."""
        slot, generation, self.checksum = self._pending
        self.slot, self.generation = slot, generation
        with self._lock:
            self._write_entry(slot, -1, generation)
        still = []
        for m in self._retired:
            try:
                m.close()
            except BufferError:
                still.append(m)
        self._retired = still

    def _mapping(self, slot: int, incarnation: int, size: int) -> mmap.mmap:
        have = self._maps.get(slot)
        if have is not None and have[0] == incarnation:
            return have[1]
        if have is not None:
            self._retired.append(have[1])
        m = _map(_slot_name(self.shard, slot, incarnation), size)
        self._maps[slot] = (incarnation, m)
        return m

    def heartbeat(self) -> None:
        with self._lock:
            _store(self._hdr, self._off + 24, _WORKER_BEAT, time.monotonic(), self.requests)

    def close(self) -> None:
        for _, m in self._maps.values():
            self._retired.append(m)
        self._maps.clear()
        for m in self._retired:
            try:
                m.close()
            except BufferError:
                pass
        self._retired = []
        try:
            self._hdr.close()
        except BufferError:
            pass
        try:
            os.close(self._lock_fd)
        except OSError:
            pass
