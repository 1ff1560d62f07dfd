"""``python -m control.cli validate``: exit codes and output, as a CI pipeline sees them."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

from tests.cli.samples import BAD_PORT, GATEWAY, ROUTE, ROUTE_TO_NOWHERE, SERVICE, write

# Modules that start workers or publish into shared memory: validate loads none of them.
# (shm.ring itself is imported by control.config for its limits; importing maps nothing.)
_FORBIDDEN = ("control.runner", "control.supervisor", "control.publish", "dataplane")


def _validate(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "control.cli", "validate", *args],
        cwd=cwd, env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True, text=True, timeout=60,
    )


def test_validate_command_valid_config_exits_0(tmp_path):
    write(tmp_path / "conf" / "gw.yaml", GATEWAY, SERVICE, ROUTE)
    proc = _validate("conf", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
    lines = proc.stdout.splitlines()
    assert lines[0] == "ok      Gateway default/gw: Accepted=True"
    assert lines[-1].startswith("valid: 0 errors, 0 failing conditions")


def test_validate_command_invalid_config_exits_1_and_quiet_prints_the_reasons(tmp_path):
    write(tmp_path / "gw.yaml", GATEWAY, BAD_PORT, ROUTE_TO_NOWHERE)
    proc = _validate("--quiet", "gw.yaml", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, "")
    assert proc.stdout.splitlines() == [
        "error   gw.yaml (document 2) Gateway default/bad: rejected: "
        "spec.listeners[0].port: expected int <= 65535",
        "fail    HTTPRoute default/nowhere parent Gateway default/gw: ResolvedRefs=False "
        "(BackendNotFound: Service default/missing not found)",
    ]


def test_validate_command_ignores_fluxgate_settings(tmp_path):
    # validate reads no setting, so a CI job's environment cannot make it fail.
    write(tmp_path / "gw.yaml", GATEWAY, SERVICE, ROUTE)
    proc = _validate("-q", "gw.yaml", cwd=tmp_path, env={"FLUXGATE_WORKERS": "zero"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_validate_command_json_is_one_document(tmp_path):
    write(tmp_path / "gw.yaml", GATEWAY, ROUTE_TO_NOWHERE)
    proc = _validate("--output", "json", "gw.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert (doc["valid"], doc["exitCode"]) == (False, 1)
    assert [o["name"] for o in doc["objects"]] == ["gw", "nowhere"]


def test_validate_command_usage_errors_exit_2(tmp_path):
    missing = _validate("nope.yaml", cwd=tmp_path)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "fluxgate validate: nope.yaml: no such file or directory" in missing.stderr
    bad_option = _validate("--output", "yaml", ".", cwd=tmp_path)
    assert bad_option.returncode == 2 and "--output" in bad_option.stderr


def test_validate_command_loads_no_runner_supervisor_or_publisher(tmp_path):
    path = write(tmp_path / "gw.yaml", GATEWAY, SERVICE, ROUTE)
    code = (
        "import sys; from control.cli import main; rc = main(['validate', '--quiet', sys.argv[1]]); "
        f"print(sorted(set({_FORBIDDEN!r}) & set(sys.modules))); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "[]\n", "")


def test_validate_command_reader_closing_early_is_no_traceback(tmp_path):
    # More output than a pipe holds, so writing really fails once the reader is gone.
    routes = [ROUTE.replace("{name: web}", f"{{name: web{i}}}") for i in range(400)]
    write(tmp_path / "gw.yaml", GATEWAY, SERVICE, *routes)
    proc = subprocess.Popen([sys.executable, "-m", "control.cli", "validate", "--output", "json", "gw.yaml"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout.readline().strip() == b"{"  # like `| head -1`
        proc.stdout.close()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert err == b""
    assert proc.returncode == 0


def test_validate_command_readme_example_is_what_it_prints():
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    proc = _validate("examples/broken/", cwd=root)
    assert proc.returncode == 1
    # The README shows the command's output verbatim.
    assert proc.stdout in readme
    proc = _validate("examples/quickstart.yaml", cwd=root)
    assert proc.returncode == 0
