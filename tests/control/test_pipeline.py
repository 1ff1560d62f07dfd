"""control/pipeline.py: builds run off the loop, one at a time; nothing is lost or torn."""

from __future__ import annotations

import asyncio
import os
import threading

from control.holdoff import Holdoff
from control.pipeline import Pipeline, error_labels
from control.objects.raw import LoadError
from control.sources.files import FileSource
from tests.control.test_object_cache import GATEWAY

def _rewrite(path, text: str) -> None:
    st = os.stat(path)
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


class _Harness:
    """A pipeline over a file source whose ``finish`` waits for ``release``."""

    def __init__(self, root, *, fail: bool = False) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()  # the build reached finish (its source read)
        self.built: list = []
        self.idle = asyncio.Event()
        self.fail = fail

        def finish(translation):
            self.entered.set()
            self.release.wait(10)
            if self.fail:
                raise RuntimeError("a bug in compile")
            return "table"

        self.pipeline = Pipeline(FileSource(root), Holdoff(0, 500),
                                 translate_options={"default_class": "fluxgate"},
                                 on_built=self.built.append, finish=finish,
                                 on_idle=self.idle.set)

    async def finished(self) -> None:
        await asyncio.wait_for(self.idle.wait(), 10)
        self.idle.clear()


async def _built(root) -> tuple[_Harness, Pipeline]:
    """A harness whose builds run through, after its first build."""
    h = _Harness(root)
    h.release.set()
    h.pipeline.start()
    await h.finished()
    return h, h.pipeline


async def _rebuild(h: _Harness, now: float) -> None:
    h.pipeline.poll(now)
    h.pipeline.start()
    await h.finished()


def _ports(status) -> list:
    return [lst.name for obj in status for lst in obj.listeners]


def test_pipeline_builds_off_the_loop_and_hands_over_whole(write, tmp_path):
    path = write("gw.yaml", GATEWAY % 8080)

    async def main():
        h = _Harness(tmp_path)
        p = h.pipeline
        p.poll(0.0)
        p.start()
        # The build is blocked in its thread; the loop still runs.
        for _ in range(5):
            await asyncio.sleep(0)
        assert p.running and p.due() is None and p.status is None and h.built == []
        h.release.set()
        await h.finished()
        assert not p.running and [b.output for b in h.built] == ["table"]
        assert p.status is h.built[0].translation.status and _ports(p.status) == ["http"]

        # A change while a build runs is built next: none is lost.
        h.release.clear()
        _rewrite(path, GATEWAY % 8081)
        p.poll(1.0)
        h.entered.clear()
        p.start()
        await asyncio.to_thread(h.entered.wait, 10)
        _rewrite(path, (GATEWAY % 8082).replace("name: http", "name: web"))
        p.poll(2.0)  # not while a build runs: the first poll after it sees the change
        assert p.due() is None  # one build at a time
        h.release.set()
        await h.finished()
        p.poll(3.0)
        assert p.due() is not None
        p.start()
        await h.finished()
        assert len(h.built) == 3 and _ports(p.status) == ["web"]

    asyncio.run(main())


def test_pipeline_failed_build_keeps_the_last_status_and_drops_the_memo(write, tmp_path):
    path = write("gw.yaml", GATEWAY % 8080)

    async def main():
        h, p = await _built(tmp_path)
        good, memo = p.status, p.memo
        h.fail = True
        _rewrite(path, GATEWAY % 8081)
        await _rebuild(h, 1.0)
        assert p.status is good and len(h.built) == 1  # nothing handed off
        assert p.memo is not memo  # trust nothing half-done

    asyncio.run(main())


def test_pipeline_counts_config_errors_and_lists_what_fails_now(write, tmp_path):
    path = write("gw.yaml", GATEWAY % 8080)

    async def main():
        h, p = await _built(tmp_path)
        _rewrite(path, GATEWAY % 8080 + "---\n- a list\n")
        await _rebuild(h, 1.0)
        assert p.config_errors == {("", "identity"): 1}
        [problem] = p.problems()
        assert "(document 2): expected a mapping" in str(problem)
        _rewrite(path, GATEWAY % 8080)
        await _rebuild(h, 2.0)
        assert p.problems() == [] and p.config_errors == {("", "identity"): 1}

    asyncio.run(main())


def test_error_labels_name_the_kind_and_reason():
    assert error_labels(LoadError("a.yaml", "", "YAML parse error")) == ("", "file")
    assert error_labels(LoadError("a.yaml", "", "metadata.name: required", 2)) == ("", "identity")
    assert error_labels(LoadError("a.yaml", "HTTPRoute default/r", "rejected: x", 1)) == ("HTTPRoute", "invalid")
    assert error_labels(LoadError("b.yaml", "Gateway default/gw", "ignored: duplicate of the one in a.yaml",
                                  1)) == ("Gateway", "duplicate")


def test_pipeline_logs_at_most_a_thousand_status_lines_per_build():
    from control.pipeline import MAX_STATUS_LINES, _fewer

    lines = [(f"HTTPRoute default/r{i}: Accepted=True", False) for i in range(5000)]
    lines[7] = ("HTTPRoute default/r7: Accepted=False (NoMatchingParent)", True)
    out = _fewer(lines)
    assert out[0] == lines[7] and len(out) == 2
    assert out[1] == ("4999 more lines (0 failing) not logged: see /debug/status", False)
    assert _fewer(lines[:MAX_STATUS_LINES]) == lines[:MAX_STATUS_LINES]


def test_pipeline_hand_off_that_must_retry_keeps_the_status_and_builds_again(write, tmp_path):
    write("gw.yaml", GATEWAY % 8080)

    async def main():
        h = _Harness(tmp_path)
        h.release.set()
        p = h.pipeline
        busy = [True]

        def on_built(build):
            h.built.append(build)
            if busy.pop() if busy else False:
                p.retry(1.0)  # e.g. a busy ring
                return False
            return True

        p.on_built = on_built
        p.start()
        await h.finished()
        assert len(h.built) == 1 and p.status is None  # not handed off: no status yet
        assert p.due() == 1.0
        p.start()  # nothing changed in the source: built again all the same
        await h.finished()
        assert len(h.built) == 2 and p.status is h.built[1].translation.status

    asyncio.run(main())
