"""The kinds table: the one list every part reads (cache, watches, status, webhook, RBAC)."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from control.controller import status_writer
from control.objects import kinds, validation
from control.servers import webhook
from control.sources import kubernetes as kube

ROOT = Path(__file__).resolve().parents[3]


def test_kinds_every_translator_named_is_a_translate_module():
    for k in kinds.KINDS:
        importlib.import_module(f"control.translate.{k.translator}")


def test_kinds_the_cache_parses_what_the_table_says():
    expected = {(av, k.kind) for k in kinds.KINDS if k.resource is not None for av in k.api_versions}
    assert set(validation.KINDS) == expected
    assert ("gateway.networking.k8s.io/v1beta1", "HTTPRoute") in validation.KINDS
    assert ("v1", "Secret") not in validation.KINDS  # watched, not parsed (TLS is not served yet)


def test_kinds_a_shard_watches_every_watched_kind_in_its_listed_version():
    watched = {(s.kind.kind, s.kind.api_version) for s in kube.plan(kube.Settings())}
    assert watched == {(k.kind, k.api_version) for k in kinds.KINDS if k.watched}


def test_kinds_status_and_webhook_follow_the_table():
    assert set(status_writer.KINDS) == {"GatewayClass", "Gateway", "HTTPRoute", "FluxGateRoute", "Ingress"}
    assert webhook.CHECKED == {k.kind for k in kinds.KINDS if k.webhook}


def test_kinds_the_shard_rbac_lets_it_watch_every_watched_kind():
    docs = list(yaml.safe_load_all((ROOT / "deploy/overlays/kubernetes-shard/rbac.yaml").read_text()))
    (role,) = [d for d in docs if d and d["kind"] == "ClusterRole"]
    allowed = {(group, resource) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] if {"list", "watch"} <= set(rule["verbs"])}
    missing = {(k.group, k.plural) for k in kinds.KINDS if k.watched} - allowed
    assert not missing


def test_kinds_own_groups_are_gateway_api_and_fluxgate():
    assert kinds.is_own_group("fluxgate.io/v1alpha3")
    assert kinds.is_own_group("gateway.networking.k8s.io/v1")
    assert not kinds.is_own_group("v1") and not kinds.is_own_group("apps/v1")
