"""`fluxgate controller` settings: defaults, checks together, clear errors."""

from __future__ import annotations

import re

import pytest

from control import config as configmod
from control.config import Config, ConfigError


def test_controller_settings_defaults():
    cfg = Config.load({}, {})
    assert (cfg.lease_duration, cfg.lease_renew_deadline, cfg.lease_retry_period) == (15, 10, 2)
    assert (cfg.webhook_address, cfg.webhook_port) == ("0.0.0.0", 9443)
    assert cfg.webhook_cert == cfg.webhook_key == cfg.pod_name == cfg.ingress_status_address == ""
    assert cfg.ingress_load_balancer is None
    assert cfg.controller_identity  # hostname-pid


def test_controller_lease_namespace_from_the_setting_the_pod_or_the_default(tmp_path, monkeypatch):
    assert Config.load({}, {"FLUXGATE_LEASE_NAMESPACE": "ops"}).controller_lease_namespace == "ops"
    sa = tmp_path / "namespace"
    monkeypatch.setattr(configmod, "SERVICE_ACCOUNT_NAMESPACE", str(sa))
    assert Config.load({}, {}).controller_lease_namespace == "fluxgate-system"
    sa.write_text("gateways\n")
    assert Config.load({}, {}).controller_lease_namespace == "gateways"


@pytest.mark.parametrize("address, expected", [
    ("203.0.113.7", [{"ip": "203.0.113.7"}]),
    ("lb.example.com", [{"hostname": "lb.example.com"}]),
])
def test_controller_ingress_status_address(address, expected):
    cfg = Config.load({}, {"FLUXGATE_INGRESS_STATUS_ADDRESS": address})
    assert cfg.ingress_load_balancer == expected


@pytest.mark.parametrize("env, message", [
    ({"FLUXGATE_LEASE_DURATION": "10"}, "FLUXGATE_LEASE_RENEW_DEADLINE (10) must be less than "
                                         "FLUXGATE_LEASE_DURATION (10)"),
    ({"FLUXGATE_LEASE_RETRY_PERIOD": "9"}, "FLUXGATE_LEASE_RETRY_PERIOD (9) must be less than"),
    ({"FLUXGATE_LEASE_DURATION": "1.5"}, "FLUXGATE_LEASE_DURATION='1.5'"),
    ({"FLUXGATE_LEASE_DURATION": "0"}, "must be at least 1"),
    ({"FLUXGATE_WEBHOOK_CERT": "/c.pem"}, "FLUXGATE_WEBHOOK_CERT is set but FLUXGATE_WEBHOOK_KEY is not"),
    ({"FLUXGATE_WEBHOOK_KEY": "/k.pem"}, "FLUXGATE_WEBHOOK_KEY is set but FLUXGATE_WEBHOOK_CERT is not"),
    ({"FLUXGATE_WEBHOOK_PORT": "70000"}, "must be at most 65535"),
    ({"FLUXGATE_WEBHOOK_ADDRESS": "localhost"}, "FLUXGATE_WEBHOOK_ADDRESS='localhost'"),
    ({"FLUXGATE_LEASE_NAMESPACE": "Ops"}, "not a namespace name"),
    ({"FLUXGATE_POD_NAME": "Pod_1"}, "not a valid pod name"),
    ({"FLUXGATE_INGRESS_STATUS_ADDRESS": "not an address"}, "not a valid IP address or hostname"),
])
def test_controller_settings_bad_values_are_clear_errors(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.load({}, env)


def test_controller_short_lease_for_tests_is_accepted():
    cfg = Config.load({}, {"FLUXGATE_LEASE_DURATION": "2", "FLUXGATE_LEASE_RENEW_DEADLINE": "1.5",
                           "FLUXGATE_LEASE_RETRY_PERIOD": "0.3"})
    assert (cfg.lease_duration, cfg.lease_renew_deadline, cfg.lease_retry_period) == (2, 1.5, 0.3)
