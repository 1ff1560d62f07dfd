"""Fixtures for control-plane tests: objects from YAML text, golden-file mode."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from control.objects.raw import KObject
from control.objects import validation



@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when golden files should be rewritten rather than compared."""
    try:
        flag = request.config.getoption("--update-golden")
    except ValueError:  # tests/conftest.py (which defines the option) not loaded
        flag = False
    return bool(flag) or os.environ.get("FLUXGATE_UPDATE_GOLDEN") == "1"


@pytest.fixture
def parse():
    """``parse(yaml_text)`` → typed resources, for translate() tests."""

    def parse(text: str) -> list:
        docs = yaml.safe_load_all(textwrap.dedent(text))
        return [
            validation.parse(KObject(doc, "test.yaml", number))
            for number, doc in enumerate(docs, start=1)
            if doc
        ]

    return parse


@pytest.fixture
def write(tmp_path: Path):
    """``write("a/b.yaml", text)`` → the path of a file under tmp_path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write
