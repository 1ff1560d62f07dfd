"""``fluxgate ... --help``: every subcommand prints its help (the README sends users there)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SUBCOMMANDS = ("run", "demo", "controller", "validate", "version")


def _fluxgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control.cli", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ("", *SUBCOMMANDS))
def test_help_of_every_subcommand_prints_usage_and_exits_0(command):
    proc = _fluxgate(*([command] if command else []), "--help")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("usage: fluxgate")


def test_run_help_shows_settings_with_a_percent_sign_literally():
    # "%2F" in a setting's help once crashed argparse's %-formatting.
    proc = _fluxgate("run", "--help")
    assert proc.returncode == 0
    assert "%2F and %5C" in proc.stdout
    assert "FLUXGATE_ESCAPED_SLASHES" in proc.stdout
