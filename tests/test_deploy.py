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
