"""Helpers for tests/shm: the deterministic payloads, and the child processes.

Imported by the tests (``payload``, ``READY``), and run as a script in a child
process: ``python shm_ring_child.py MODE SHARD [ARGS...]``. Every child prints
exactly one ``READY ...`` line once it is in the state the test wants (except
``stress``, which prints READY when attached and one JSON line when it stops),
and every loop in here is bounded by a count and a deadline.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from shm import ring  # noqa: E402

READY = "READY"

# Payload sizes are log-uniform between 16 bytes and a cap that doubles every
# RAMP generations from 4 KiB up to MAX_PAYLOAD, so ring slots keep growing
# (new incarnations) well into a long run.
_HEAD = struct.Struct("<QQ")  # generation, body length
_TAIL = struct.Struct("<Q")  # generation again, last bytes of the table
RAMP = 150
MAX_PAYLOAD = 512 * 1024


def payload_size(generation: int) -> int:
    cap = min(MAX_PAYLOAD, 4096 << (generation // RAMP))
    rng = random.Random(generation * 2654435761 + 17)
    return int(math.exp(rng.uniform(math.log(16), math.log(cap))))


def payload(generation: int) -> bytes:
    """The table of ``generation``: a pure function of it, of widely varying size."""
    n = payload_size(generation)
    body = random.Random(generation).randbytes(n)
    return _HEAD.pack(generation, n) + body + _TAIL.pack(generation)


def shard_segments(shard: str) -> set[str]:
    """What /dev/shm holds of ``shard``: "hdr" and "K.I" (slot K, incarnation I).

    Only exact names of this shard: "fluxgate.a.b.hdr" is shard "a.b", not "a".
    """
    prefix = f"fluxgate.{shard}."
    out = set()
    for e in os.listdir("/dev/shm"):
        rest = e[len(prefix):]
        if e.startswith(prefix) and (
            rest == "hdr" or (rest.count(".") == 1 and rest.replace(".", "").isdigit())
        ):
            out.add(rest)
    return out


def _sleep_forever(limit: float = 120.0) -> None:
    """What a stuck child does; bounded so an orphan cannot outlive the run."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        time.sleep(0.5)


def _ready(*fields) -> None:
    print(READY, *fields, flush=True)


# --- modes ---------------------------------------------------------------------


def mode_writer(shard: str) -> None:
    """Own the shard, leave several incarnations behind, then hang around."""
    w = ring.RingWriter(shard, slots=2)
    w.publish(b"x" * 100)  # slot 0, incarnation 0
    w.publish(b"y" * 100)  # slot 1, incarnation 0
    w.publish(b"z" * (200 * 1024))  # slot 0 grows: incarnation 1
    w.publish(b"w" * (300 * 1024))  # slot 1 grows: incarnation 1
    # A segment the header does not list (as if the writer died between
    # growing a slot and flipping to it).
    orphan = ring._slot_name(shard, 1, 7)
    import posix_ipc

    posix_ipc.SharedMemory(orphan, posix_ipc.O_CREX, size=4096).close_fd()
    _ready(w.generation, ",".join(sorted(shard_segments(shard))))
    _sleep_forever()


def mode_pin(shard: str, index: str) -> None:
    """Acquire the current table (pinning its slot) and never let go."""
    r = ring.RingReader(shard, int(index))
    snap = None
    end = time.monotonic() + 10
    while snap is None and time.monotonic() < end:
        snap = r.acquire()
        if snap is None:
            time.sleep(0.01)
    if snap is None:
        print("no table to pin", file=sys.stderr, flush=True)
        sys.exit(3)
    _ready(snap.generation, snap.slot)
    _sleep_forever()


def mode_churn(shard: str, index: str, stop_file: str, limit: str) -> None:
    """Hold one committed table and rewrite our worker entry as fast as we can.

    heartbeat() and commit() (re-committing the same snapshot) are what every
    worker does all the time; neither may ever make our slot look unpinned.
    """
    r = ring.RingReader(shard, int(index))
    snap = r.acquire()
    if snap is None:
        print("no table", file=sys.stderr, flush=True)
        sys.exit(3)
    expected = payload(snap.generation)
    r.commit()
    _ready(snap.generation, snap.slot)
    deadline = time.monotonic() + float(limit)
    n = 0
    while n < 5_000_000 and time.monotonic() < deadline:
        for _ in range(200):
            r.heartbeat()
            r.commit()
        n += 200
        if os.path.exists(stop_file):
            break
    intact = bytes(snap.view) == expected
    print(json.dumps({"rewrites": n, "intact": intact}), flush=True)


def mode_flock(shard: str) -> None:
    """Take the header's flock the way RingReader.acquire does, and keep it."""
    fd = ring._open_lock_fd(shard)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _ready(os.getpid())
    _sleep_forever()


def mode_stress(
    shard: str, index: str, seed: str, stop_file: str, limit: str, long_hold: str
) -> None:
    """Acquire, verify against payload(generation), hold, re-verify, swap, commit.

    Like a worker, it keeps using its committed snapshot (``old``) while it
    acquires and checks the next one, and checks that ``old`` is still intact
    (it is pinned as ``prev``) right before it drops it and commits. With
    probability ``long_hold`` it holds a new snapshot until the writer has
    published 40 more generations (at most 1.5 s), re-checking it meanwhile.
    """
    rng = random.Random(int(seed))
    long_hold_p = float(long_hold)
    deadline = time.monotonic() + float(limit)
    r = ring.RingReader(shard, int(index))
    stats = {
        "index": int(index),
        "verified": 0,  # new tables whose bytes were exactly payload(generation)
        "torn": 0,  # any mismatch, at any check
        "torn_detail": [],
        "checksum_errors": 0,
        "other_errors": [],
        "regressions": 0,  # a generation not newer than the committed one
        "rechecks": 0,  # re-verifications of held snapshots
        "long_holds": 0,
        "max_span": 0,  # most writer generations published while one snapshot was held
        "last_generation": 0,
        "iterations": 0,
    }
    _ready(os.getpid())

    def check(view, expected, generation, where) -> bool:
        stats["rechecks"] += 1
        if len(view) == len(expected) and bytes(view) == expected:
            return True
        stats["torn"] += 1
        if len(stats["torn_detail"]) < 5:
            got = bytes(view[:16])
            stats["torn_detail"].append(
                f"gen {generation} {where}: len {len(view)} vs {len(expected)}, head {got.hex()}"
            )
        return False

    def current_generation() -> int:
        # The seqlock read the reader itself uses; it pins nothing.
        return r._read_header()[0][4]

    old = old_expected = None
    old_gen = 0
    iterations = 0
    while iterations < 1_000_000 and time.monotonic() < deadline:
        iterations += 1
        if iterations % 16 == 0 and os.path.exists(stop_file):
            break
        try:
            snap = r.acquire()
        except ring.RingError as e:
            if "checksum" in str(e):
                stats["checksum_errors"] += 1
            else:
                stats["other_errors"].append(str(e)[:200])
                if len(stats["other_errors"]) > 20:
                    break
            time.sleep(0.001)
            continue
        if snap is None:
            time.sleep(0.0003)
            continue
        gen = snap.generation
        if gen <= old_gen:
            stats["regressions"] += 1
        expected = payload(gen)
        if check(snap.view, expected, gen, "at acquire"):
            stats["verified"] += 1
        # Hold it: usually briefly, sometimes across many publishes.
        if rng.random() < long_hold_p:
            stats["long_holds"] += 1
            hold_end = time.monotonic() + 1.5
            checks = 0
            while (
                current_generation() < gen + 40
                and time.monotonic() < min(hold_end, deadline)
                and checks < 2000
            ):
                checks += 1
                time.sleep(0.002)
                if checks % 10 == 0:
                    check(snap.view, expected, gen, "during long hold")
            stats["max_span"] = max(stats["max_span"], current_generation() - gen)
        else:
            time.sleep(rng.uniform(0, 0.002))
        check(snap.view, expected, gen, "before commit")
        if old is not None:
            check(old, old_expected, old_gen, "old snapshot at swap")
            old.release()
        old, old_expected, old_gen = snap.view, expected, gen
        del snap
        r.commit()
        r.heartbeat()
    stats["iterations"] = iterations
    stats["last_generation"] = old_gen
    if old is not None:
        old.release()
    r.close()
    print(json.dumps(stats), flush=True)


MODES = {
    "writer": mode_writer,
    "pin": mode_pin,
    "flock": mode_flock,
    "churn": mode_churn,
    "stress": mode_stress,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
