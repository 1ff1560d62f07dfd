"""Tracing settings: FLUXGATE_OTLP_ENDPOINT and friends, checked at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from control import config as config_module
from control.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_tracing_is_off_by_default_and_samples_one_percent_when_on():
    cfg = Config.load({}, {})
    assert cfg.otlp_endpoint == "" and cfg.trace_sampling == 0.01
    env = {"FLUXGATE_OTLP_ENDPOINT": "http://collector:4318", "FLUXGATE_TRACE_SAMPLING": "0.5",
           "FLUXGATE_TRACE_QUEUE_SIZE": "64", "FLUXGATE_OTLP_TIMEOUT": "2", "FLUXGATE_TRACE_SERVICE_NAME": "edge"}
    cfg = Config.load({}, env)
    settings = cfg.worker_settings(0)  # the worker samples; the control process exports
    assert settings.otlp_endpoint == "http://collector:4318/v1/traces" and settings.trace_sampling == 0.5
    assert (cfg.trace_queue_size, cfg.otlp_timeout, cfg.trace_service_name) == (64, 2.0, "edge")


@pytest.mark.parametrize("raw, url", [
    ("http://collector:4318", "http://collector:4318/v1/traces"),
    ("http://collector:4318/", "http://collector:4318/v1/traces"),
    ("https://otel.example.com", "https://otel.example.com/v1/traces"),
    ("http://127.0.0.1:4318/custom/traces", "http://127.0.0.1:4318/custom/traces"),  # a path is kept
    ("  ", ""),
])
def test_the_endpoint_is_the_collectors_traces_url(raw, url):
    assert Config.load({}, {"FLUXGATE_OTLP_ENDPOINT": raw}).otlp_endpoint == url


@pytest.mark.parametrize("env, message", [
    ({"FLUXGATE_TRACE_SAMPLING": "2"}, "FLUXGATE_TRACE_SAMPLING='2': must be at most 1"),
    ({"FLUXGATE_TRACE_SAMPLING": "-0.1"}, "FLUXGATE_TRACE_SAMPLING='-0.1': must be at least 0"),
    ({"FLUXGATE_TRACE_SAMPLING": "1%"}, "FLUXGATE_TRACE_SAMPLING='1%'"),
    ({"FLUXGATE_TRACE_SAMPLING": "nan"}, "must be a finite number"),
    ({"FLUXGATE_OTLP_ENDPOINT": "collector:4318"}, "expected an http:// or https:// URL"),
    ({"FLUXGATE_OTLP_ENDPOINT": "grpc://collector:4317"}, "expected an http:// or https:// URL"),
    ({"FLUXGATE_OTLP_ENDPOINT": "http://"}, "expected an http:// or https:// URL"),
    ({"FLUXGATE_OTLP_ENDPOINT": "http://collector:99999"}, "FLUXGATE_OTLP_ENDPOINT"),
    ({"FLUXGATE_OTLP_ENDPOINT": "http://collector:4318/v1/traces?x=1"}, "without a query"),
    ({"FLUXGATE_TRACE_QUEUE_SIZE": "0"}, "FLUXGATE_TRACE_QUEUE_SIZE='0': must be at least 1"),
    ({"FLUXGATE_OTLP_TIMEOUT": "0"}, "FLUXGATE_OTLP_TIMEOUT='0': must be at least 0.1"),
])
def test_bad_tracing_settings_are_clear_errors(env, message):
    with pytest.raises(ConfigError) as err:
        Config.load({}, env)
    assert message in str(err.value)


def test_an_endpoint_without_the_otel_packages_is_an_error_not_a_silent_off(monkeypatch):
    monkeypatch.setattr(config_module, "_otel_missing", lambda: "opentelemetry-sdk is")
    with pytest.raises(ConfigError) as err:
        Config.load({}, {"FLUXGATE_OTLP_ENDPOINT": "http://collector:4318"})
    assert "FLUXGATE_OTLP_ENDPOINT is set but opentelemetry-sdk is not installed" in str(err.value)
    assert "fluxgate[otel]" in str(err.value)
    Config.load({}, {})  # without an endpoint nothing is needed


def test_cli_without_the_otel_packages_stops_the_start(tmp_path):
    shadow = tmp_path / "shadow" / "opentelemetry"  # a package that hides the installed one
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), str(ROOT)]),
           "FLUXGATE_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    proc = subprocess.run([sys.executable, "-m", "control.cli", "run", "--config", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "FLUXGATE_OTLP_ENDPOINT is set but opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http" \
           " are not installed" in proc.stderr
