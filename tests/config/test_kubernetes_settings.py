"""Kubernetes-mode settings: parsed, checked together, and clear when wrong."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from control import config as configmod
from control.config import Config, ConfigError


def test_kubernetes_settings_defaults():
    cfg = Config.load({}, {})
    assert cfg.kubernetes is False and cfg.kubeconfig == "" and cfg.resync_seconds == 15
    assert cfg.gateways == () and cfg.gateway_class == "fluxgate" and cfg.watch_namespaces == ()


def test_kubernetes_settings_lists_are_parsed_and_deduplicated():
    cfg = Config.load({}, {"FLUXGATE_KUBERNETES": "true",
                           "FLUXGATE_GATEWAYS": "edge/public, edge/internal,edge/public",
                           "FLUXGATE_WATCH_NAMESPACES": "edge,team-a"})
    assert cfg.gateways == ("edge/public", "edge/internal")
    assert cfg.watch_namespaces == ("edge", "team-a")


@pytest.mark.parametrize("env, message", [
    ({"FLUXGATE_GATEWAYS": "public"}, "'public' is not namespace/name"),
    ({"FLUXGATE_GATEWAYS": "a/b/c"}, "'a/b/c' is not namespace/name"),
    ({"FLUXGATE_GATEWAYS": "Edge/public"}, "'Edge' is not a namespace name"),
    ({"FLUXGATE_GATEWAYS": "edge/"}, "'' is not a valid Gateway name"),
    ({"FLUXGATE_GATEWAYS": "edge/a,,edge/b"}, "empty item"),
    ({"FLUXGATE_WATCH_NAMESPACES": "team_a"}, "'team_a' is not a namespace name"),
    ({"FLUXGATE_GATEWAY_CLASS": "Not A Class"}, "not a valid GatewayClass name"),
    ({"FLUXGATE_RESYNC_SECONDS": "0.5"}, "must be at least 1"),
    ({"FLUXGATE_KUBERNETES": "maybe"}, "expected true or false"),
    ({"FLUXGATE_KUBERNETES": "true", "FLUXGATE_CONFIG": "/etc/fluxgate"}, "exclude each other"),
    ({"FLUXGATE_GATEWAYS": "edge/public", "FLUXGATE_WATCH_NAMESPACES": "team-a"},
     "FLUXGATE_GATEWAYS names edge/public outside FLUXGATE_WATCH_NAMESPACES"),
])
def test_kubernetes_settings_bad_value_is_a_clear_error(env, message):
    with pytest.raises(ConfigError) as err:
        Config.load({}, env)
    assert message in str(err.value)


def test_kubernetes_flag_stands_alone_and_still_takes_a_value():
    parser = argparse.ArgumentParser()
    configmod.add_flags(parser)
    assert parser.parse_args(["--kubernetes", "--workers", "2"]).kubernetes == "true"
    assert parser.parse_args(["--kubernetes", "false"]).kubernetes == "false"
    assert parser.parse_args(["--merge-slashes", "false"]).merge_slashes == "false"
    assert Config.load(configmod.flags_from(parser.parse_args(["--kubernetes"])), {}).kubernetes


def test_kubernetes_shard_name_is_stable_and_differs_by_what_is_watched():
    a = Config.load({"kubernetes": "true", "gateways": "edge/a"}, {})
    b = Config.load({"kubernetes": "true", "gateways": "edge/b"}, {})
    assert a.shard_name == Config.load({"kubernetes": "true", "gateways": "edge/a"}, {}).shard_name
    assert a.shard_name != b.shard_name != Config.load({}, {}).shard_name


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control.cli", "run", *args],
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env},
                          capture_output=True, text=True, timeout=60)


def test_cli_kubernetes_with_config_is_a_usage_error(tmp_path):
    proc = _run("--kubernetes", "--config", str(tmp_path))
    assert proc.returncode == 2
    assert "--kubernetes" in proc.stderr and "--config" in proc.stderr


def test_cli_kubernetes_missing_kubeconfig_is_a_clear_error(tmp_path):
    proc = _run("--kubernetes", "--kubeconfig", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "FLUXGATE_KUBECONFIG=" in proc.stderr and "no such file" in proc.stderr


def test_cli_kubernetes_without_any_client_configuration_says_where_it_looked():
    proc = _run("--kubernetes")
    assert proc.returncode == 2
    assert "cannot load the Kubernetes client configuration" in proc.stderr


def test_cli_run_needs_config_or_kubernetes():
    proc = _run()
    assert proc.returncode == 2
    assert "--config" in proc.stderr and "--kubernetes" in proc.stderr
