"""The compiled data path and its pure-Python fallback.

The install (``pip install -e .``, setup.py) compiles every ``dataplane.NATIVE``
module with Cython; Python then imports the compiled twin. ``FLUXGATE_NATIVE=false``
makes a process use the ``.py`` sources. Both paths must behave the same, so
the data-plane and hardening tests also run here on the pure path (in a
subprocess: the choice is made before any hot module is imported).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import dataplane

ROOT = Path(__file__).resolve().parents[2]

_REPORT = """
import importlib, json, sys, dataplane
for name in dataplane.NATIVE:
    importlib.import_module(name)
print(json.dumps({"compiled": dataplane.compiled(),
                  "files": [sys.modules[n].__file__ for n in dataplane.NATIVE]}))
"""


def _report(native: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FLUXGATE_NATIVE"}
    if native is not None:
        env["FLUXGATE_NATIVE"] = native
    out = subprocess.run([sys.executable, "-c", _REPORT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_install_builds_every_native_module():
    missing = [name for name in dataplane.NATIVE
               if importlib.util.find_spec(name).origin.endswith(".py")]
    missing += [name for name in dataplane.ACCELERATORS if importlib.util.find_spec(name) is None]
    assert missing == [], f"not compiled (run: python setup.py build_ext --inplace): {missing}"


def test_compiled_modules_are_chosen_by_default():
    report = _report(None)
    assert report["compiled"] == list(dataplane.NATIVE + dataplane.ACCELERATORS)
    assert not any(f.endswith(".py") for f in report["files"])


def test_native_false_runs_every_hot_module_from_its_source():
    for value in ("false", "0", "off"):
        report = _report(value)
        assert report["compiled"] == []  # the accelerators hidden: their importers fall back
        assert all(f.endswith(".py") for f in report["files"]), report["files"]


def test_dataplane_and_hardening_suites_pass_on_the_pure_python_path():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
    env["FLUXGATE_NATIVE"] = "false"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/dataplane", "tests/hardening", "--deselect", f"tests/dataplane/{Path(__file__).name}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1]
