"""Config: every FLUXGATE_* variable validated at start, flags win over env."""

from __future__ import annotations

import subprocess
import sys

import pytest

from control.config import SETTINGS, Config, ConfigError


def test_config_defaults_are_valid_and_frozen():
    cfg = Config.load({}, {})
    assert cfg.admin_port == 9090 and cfg.workers == 0 and cfg.worker_count >= 1
    with pytest.raises(Exception):
        cfg.workers = 3  # type: ignore[misc]


def test_config_flag_wins_over_environment():
    cfg = Config.load({"workers": "3"}, {"FLUXGATE_WORKERS": "5"})
    assert cfg.workers == 3
    assert Config.load({}, {"FLUXGATE_WORKERS": "5"}).workers == 5


@pytest.mark.parametrize("env, named", [
    ({"FLUXGATE_WORKERS": "many"}, "FLUXGATE_WORKERS"),
    ({"FLUXGATE_WORKERS": "-1"}, "FLUXGATE_WORKERS"),
    ({"FLUXGATE_ADMIN_PORT": "70000"}, "FLUXGATE_ADMIN_PORT"),
    ({"FLUXGATE_BIND_ADDRESS": "localhost:80"}, "FLUXGATE_BIND_ADDRESS"),
    ({"FLUXGATE_LOG_LEVEL": "chatty"}, "FLUXGATE_LOG_LEVEL"),
    ({"FLUXGATE_DRAIN_SECONDS": "nan"}, "FLUXGATE_DRAIN_SECONDS"),
    ({"FLUXGATE_SHARD": "Has Spaces"}, "FLUXGATE_SHARD"),
    ({"FLUXGATE_WORKRES": "2"}, "FLUXGATE_WORKRES"),
    ({"FLUXGATE_HOLDOFF_MS": "900", "FLUXGATE_HOLDOFF_MAX_MS": "500"}, "FLUXGATE_HOLDOFF_MAX_MS"),
])
def test_config_bad_value_names_the_variable(env, named):
    with pytest.raises(ConfigError) as err:
        Config.load({}, env)
    assert named in str(err.value)


def test_config_every_setting_has_env_flag_and_help():
    names = {s.env for s in SETTINGS}
    assert len(names) == len(SETTINGS)
    for s in SETTINGS:
        assert s.env.startswith("FLUXGATE_") and s.flag.startswith("--") and s.help


def test_config_shard_name_is_stable_per_config_path():
    a = Config.load({"config": "/etc/fluxgate/a.yaml"}, {})
    b = Config.load({"config": "/etc/fluxgate/b.yaml"}, {})
    assert a.shard_name == Config.load({"config": "/etc/fluxgate/a.yaml"}, {}).shard_name
    assert a.shard_name != b.shard_name
    assert Config.load({}, {"FLUXGATE_SHARD": "edge-1"}).shard_name == "edge-1"


def test_cli_bad_environment_stops_the_start_with_the_variable_named(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "FLUXGATE_WORKERS": "zero"}
    proc = subprocess.run(
        [sys.executable, "-m", "control.cli", "run", "--config", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "FLUXGATE_WORKERS" in proc.stderr


def test_cli_missing_config_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "control.cli", "run", "--config", str(tmp_path / "nope.yaml")],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "nope.yaml" in proc.stderr
