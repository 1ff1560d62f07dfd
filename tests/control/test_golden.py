"""Golden files: testdata/<case>.in.yaml (or the directory <case>.in/) → <case>.out.yaml.

Each case runs the whole file-mode pipeline (FileSource → ObjectCache →
translate → compile_table) and records what an operator would see: the
problems logged, the status report and the compiled table. Review changes as
YAML diffs; regenerate with ``pytest tests/control --update-golden`` (or
``FLUXGATE_UPDATE_GOLDEN=1``).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

from control.cache import ObjectCache
from control.compile import compile_table, table_to_builtins
from control.sources.files import FileSource
from control.translate import translate

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(
    p for p in TESTDATA.iterdir()
    if p.name.endswith(".in.yaml") or (p.is_dir() and p.name.endswith(".in"))
)


def _case_name(path: Path) -> str:
    return path.name.removesuffix(".yaml").removesuffix(".in")


def _render(path: Path) -> tuple[dict, str]:
    cache = ObjectCache()
    cache.apply(FileSource(path).load())
    translation = translate(cache.objects())
    table = compile_table(translation.ir, source=_case_name(path))
    prefix = str(TESTDATA) + "/"
    data = {
        "problems": [str(p).replace(prefix, "") for p in cache.errors + cache.warnings],
        "status": translation.status.to_builtins(),
        "table": table_to_builtins(table),
    }
    header = f"# Generated from {path.name} by tests/control/test_golden.py; do not edit.\n"
    return data, header + yaml.safe_dump(data, sort_keys=False, width=120)


@pytest.mark.parametrize("case", CASES, ids=_case_name)
def test_golden_pipeline_output_matches(case: Path, update_golden: bool):
    data, text = _render(case)
    out = TESTDATA / f"{_case_name(case)}.out.yaml"
    if update_golden:
        out.write_text(text)
        return
    assert out.exists(), f"{out.name} missing: run pytest tests/control --update-golden"
    expected = out.read_text()
    if yaml.safe_load(expected) != data:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"{out.name} (expected)", tofile="actual",
        ))
        pytest.fail(f"{out.name} differs (--update-golden to accept):\n{diff}")


@pytest.mark.parametrize("case", CASES, ids=_case_name)
def test_golden_pipeline_output_ignores_object_order(case: Path):
    """translate and compile are functions of the set of objects, not their order."""
    cache = ObjectCache()
    cache.apply(FileSource(case).load())
    objects = cache.objects()
    forward = translate(objects)
    backward = translate(tuple(reversed(objects)))
    assert compile_table(forward.ir) == compile_table(backward.ir)
    assert forward.status == backward.status
    assert forward.ir == backward.ir


def test_golden_every_case_has_an_output_file():
    outs = {p.name.removesuffix(".out.yaml") for p in TESTDATA.glob("*.out.yaml")}
    assert outs == {_case_name(c) for c in CASES}
