"""deploy/ stays in step with the code: every kustomization renders, and what
its pods run is something FluxGate accepts (a real subcommand, known settings)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from control.config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZATIONS = sorted(p.parent for p in (ROOT / "deploy").rglob("kustomization.yaml"))
KNOWN_ENV = {s.env for s in SETTINGS}
SUBCOMMANDS = {"run", "controller", "validate", "demo", "version"}


def _render(path: Path) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (its built-in kustomize renders deploy/)")
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_deploy_kustomization_renders_and_runs_known_commands_and_settings(path):
    docs = _render(path)
    assert docs
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert container["args"][0] in SUBCOMMANDS, container["args"]
            unknown = {e["name"] for e in container.get("env", ())
                       if e["name"].startswith("FLUXGATE_")} - KNOWN_ENV
            assert not unknown, f"{path}: settings the gateway would refuse: {sorted(unknown)}"


def test_deploy_kubernetes_shard_is_read_only():
    docs = _render(ROOT / "deploy/overlays/kubernetes-shard")
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"] == ["run", "--kubernetes"]
    assert spec["serviceAccountName"] == [d for d in docs if d["kind"] == "ServiceAccount"][0]["metadata"]["name"]


def test_deploy_controller_writes_only_status_and_its_lease_and_registers_the_webhook():
    docs = _render(ROOT / "deploy/controller")
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (deployment,) = by_kind["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["controller"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert env["FLUXGATE_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {"FLUXGATE_WEBHOOK_CERT", "FLUXGATE_WEBHOOK_KEY"} <= set(env)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["webhook"] == int(env["FLUXGATE_WEBHOOK_PORT"]["value"])
    (account,) = by_kind["ServiceAccount"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]

    # Cluster-wide: read everything, write only status subresources.
    (role,) = by_kind["ClusterRole"]
    for rule in role["rules"]:
        if set(rule["verbs"]) - {"get", "list", "watch"}:
            assert all(r.endswith("/status") for r in rule["resources"]), rule
            assert set(rule["verbs"]) <= {"get", "update", "patch"}
    written = {r for rule in role["rules"] for r in rule["resources"] if "update" in rule["verbs"]}
    assert written == {"gatewayclasses/status", "gateways/status", "httproutes/status",
                       "fluxgateroutes/status", "ingresses/status"}
    # Leases only in its own namespace.
    (lease_role,) = by_kind["Role"]
    assert lease_role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                    "verbs": ["get", "create", "update"]}]
    namespace = deployment["metadata"]["namespace"]
    assert lease_role["metadata"]["namespace"] == namespace

    # The webhook: the Service selects the pods; cert-manager injects the CA.
    (service,) = by_kind["Service"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (hook_config,) = by_kind["ValidatingWebhookConfiguration"]
    (certificate,) = by_kind["Certificate"]
    assert hook_config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{namespace}/{certificate['metadata']['name']}")
    (hook,) = hook_config["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["clientConfig"]["service"]["path"] == "/validate"
    assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
    assert hook["clientConfig"]["service"]["namespace"] == namespace
    assert f"{service['metadata']['name']}.{namespace}.svc" in certificate["spec"]["dnsNames"]
    resources = {(g, r) for rule in hook["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert resources == {("gateway.networking.k8s.io", r) for r in
                         ("gateways", "httproutes", "gatewayclasses", "referencegrants")} | {
        ("fluxgate.io", "fluxgateroutes"), ("networking.k8s.io", "ingresses")}
    mounted = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert certificate["spec"]["secretName"] in mounted
