"""The import rule: control → shm, common ← dataplane. Enforced here, so CI runs it.

dataplane never imports control (and never the Kubernetes client); control
never imports dataplane (it starts workers as ``python -m dataplane``); shm
(shared memory: schema, codec, ring) imports only the standard library,
msgspec and posix_ipc; common (what both sides share that is not shared
memory: matching, path normalisation, the log format) only the standard
library and msgspec.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)
RULES = {
    "shm": {"allowed": {"shm", "msgspec", "posix_ipc"}},
    "common": {"allowed": {"common", "msgspec"}},
    # Workers never import opentelemetry (the optional fluxgate[otel] extra): the
    # control process exports their spans (control/otlp.py, control/tracing.py).
    "dataplane": {"allowed": {"dataplane", "shm", "common", "msgspec", "httptools", "uvloop", "posix_ipc"}},
    "control": {"forbidden": {"dataplane"}},
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(RULES))
def test_imports_follow_the_one_way_rule(package):
    rule = RULES[package]
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found for {package}"
    bad = []
    for f in files:
        for line, top in _imports(f):
            if top in STDLIB and "allowed" in rule:
                continue
            if "allowed" in rule and top not in rule["allowed"]:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {top}")
            if top in rule.get("forbidden", ()):
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {top}")
    assert bad == []


def test_imports_rule_check_catches_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import control.config\nfrom kubernetes import client\n")
    tops = [top for _, top in _imports(bad)]
    assert tops == ["control", "kubernetes"]
    assert not set(tops) <= RULES["dataplane"]["allowed"]


def test_only_control_otlp_imports_opentelemetry():
    """The optional extra stays behind one module: without it installed, tracing
    off, nothing else may need it."""
    users = sorted(str(f.relative_to(ROOT)) for package in RULES for f in (ROOT / package).rglob("*.py")
                   if any(top == "opentelemetry" for _, top in _imports(f)))
    assert users == ["control/otlp.py"]
