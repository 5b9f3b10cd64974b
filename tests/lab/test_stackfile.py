"""`write_stack_file` produces a stack file whose secrets the real engine encrypted and decrypts."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from lab import images
from lab.hosts import INSTANCE, REPO, LabError
from lab.stackfile import PASSPHRASE, _pulumi_env, write_stack_file

pytestmark = pytest.mark.toolchain  # the engine toolchain (make toolchain)


@pytest.fixture
def engine_env(lab, tmp_path):
    try:
        return _pulumi_env(lab, tmp_path / "pulumi-home")
    except LabError as e:
        pytest.fail(f"no engine (run `make toolchain`): {e}")


def test_stack_file_secrets_round_trip(lab, engine_env, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(REPO / "Pulumi.yaml", project / "Pulumi.yaml")
    images.generate(lab.state / "images", apps=1, app_size=64 << 10, layers=1,
                    cluster_size=64 << 10, history=lab.state / "application.json")
    out = write_stack_file(lab, project_dir=project)
    doc = yaml.safe_load(out.read_text())
    assert doc["encryptionsalt"]
    cfg = doc["config"]
    assert cfg["sealer-registry:master0"] == f"198.18.{INSTANCE}.11"
    assert cfg["sealer-registry:apps"]["cluster_image_id"].startswith("sha256:")
    assert set(cfg["sealer-registry:cluster"]["ssh"]["private_key"]) == {"secure"}
    assert set(cfg["sealer-registry:registry"]["password"]) == {"secure"}
    assert set(cfg["sealer-registry:registry"]["tls"]["ca_key"]) == {"secure"}
    hosts = {h["ip"]: h["host_key"] for h in lab.inventory()["hosts"]}
    assert cfg["sealer-registry:cluster"]["ssh"]["host_keys"] == hosts
    env = dict(engine_env, PULUMI_CONFIG_PASSPHRASE=PASSPHRASE)
    got = subprocess.run(["pulumi", "config", "get", "--path", "--stack", "lab",
                          "cluster.ssh.private_key"], cwd=project, env=env, capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == lab.key_path.read_text().strip()
    # a second run keeps the salt (the stack's encrypted state stays readable)
    again = yaml.safe_load(write_stack_file(lab, project_dir=project).read_text())
    assert again["encryptionsalt"] == doc["encryptionsalt"]
    if (REPO / "cli").is_dir():
        # validate checks that the files the stack names exist; the kubeconfig is written by the
        # control plane, which this tier does not run.
        kubeconfig = lab.state / "kubeconfig"
        if not kubeconfig.exists():
            kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
        v = subprocess.run([sys.executable, "-m", "cli", "validate", "--stack", "lab",
                            "--project-dir", str(project)], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
