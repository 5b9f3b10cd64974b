"""Shared e2e fixtures: a lab of real hosts with generated images, and a stack of this project
configured for it the way an operator would (plain values in the stack file, secrets through
`pulumi config set --secret --path` on stdin).

Use in a test module with ``from tests.e2e.labstack import lab_env  # noqa: F401``. The lab's
host names (srl-*) are global to the machine: one lab at a time, so ``lab_env`` is module-scoped
and takes its lab down when the module ends.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import Lab
from lab import images as lab_images
from material import pki

REPO = Path(__file__).resolve().parents[2]
PROJECT = "sealer-registry"
DOMAIN = "sea.hub"
PORT = 5000
PASSWORD = "e2e-Registry-Passw0rd"


@dataclass
class LabEnv:
    lab: Lab
    inventory: dict
    key_path: Path
    store: Path
    history_file: Path
    cluster_image_id: str
    refs: list[str]            # every REPO:TAG@DIGEST the registry must serve
    kubeconfig: Path
    ca: tuple[str, str]        # (cert, key) for stacks that bring their own CA

    @property
    def masters(self) -> list[str]:
        return [h["ip"] for h in self.inventory["hosts"] if h["role"] == "master"]

    @property
    def nodes(self) -> list[str]:
        return [h["ip"] for h in self.inventory["hosts"] if h["role"] == "node"]

    @property
    def all_ips(self) -> list[str]:
        return [*self.masters, *self.nodes]

    @property
    def rootfs(self) -> str:
        return f"{self.inventory['data_root']}/{self.inventory['cluster']}/rootfs"

    def hosts_file(self, ip: str) -> str:
        return self.lab.run(ip, "cat /etc/hosts").stdout


def make_lab_env(state: Path, kubeconfig: Path, masters: int = 3, nodes: int = 2,
                 apps: int = 2, app_size: int = 512 << 10, cluster_size: int = 1 << 20) -> LabEnv:
    """Bring up a lab in ``state`` (hosts, images, application.json); ``Lab(state).down()`` undoes it."""
    lab = Lab(state)
    lab.up(masters=masters, nodes=nodes)
    summary = lab_images.generate(state / "images", apps=apps, app_size=app_size, layers=2,
                                  cluster_size=cluster_size, seed=0,
                                  history=state / "application.json")
    refs = [f"{r['repository']}:{r['tag']}@{r['digest']}"
            for img in [summary["cluster"], *summary["apps"]] for r in img["refs"]]
    return LabEnv(lab=lab, inventory=lab.inventory(), key_path=lab.key_path,
                  store=Path(summary["store"]), history_file=Path(summary["history"]),
                  cluster_image_id=summary["cluster_image_id"], refs=refs,
                  kubeconfig=Path(kubeconfig), ca=pki.generate_ca())


@pytest.fixture(scope="module")
def lab_env(controlplane, tmp_path_factory):
    """A fresh lab (3 masters, 2 nodes) with small generated images, for one test module."""
    state = tmp_path_factory.mktemp("lab")
    Lab(state).down()  # a crashed earlier run holds the srl- names
    env = make_lab_env(state, controlplane.kubeconfig)
    yield env
    env.lab.down()


def cli_stack_values(env: LabEnv, *, master0: str, deploy_hosts: list[str],
                     distribution: str = "pre", down_hosts: list[str] = ()) -> dict[str, Any]:
    """Plain config for the lab: the SSH key by path (as most operators keep it), pinned host
    keys, and no tls section: `cli init-pki` adds it."""
    inv = env.inventory
    return {
        "master0": master0,
        "down_hosts": list(down_hosts),
        "distribution": distribution,
        "cluster": {
            "name": inv["cluster"], "data_root": inv["data_root"],
            "masters": env.masters, "nodes": env.nodes,
            "ssh": {"user": "root", "port": 22, "private_key_path": str(env.key_path),
                    "host_keys": {h["ip"]: h["host_key"] for h in inv["hosts"]}},
        },
        "registry": {
            "domain": DOMAIN, "port": PORT, "username": "admin",
            "local_registry": {"deploy_hosts": list(deploy_hosts), "insecure_mode": False},
        },
        "apps": {"history_file": str(env.history_file), "image_store": str(env.store),
                 "cluster_image_id": env.cluster_image_id},
        "kubernetes": {"kubeconfig_path": str(env.kubeconfig), "cluster_identifier": inv["cluster"]},
    }


class CliStack:
    """A stack of this project driven only through commands an operator types: `pulumi` and
    `python -m cli`, as subprocesses with the engine's environment ``env``."""

    def __init__(self, name: str, env: dict[str, str], project_dir: Path = REPO):
        self.name = name
        self.env = dict(env, PYTHONPATH=str(REPO))
        self.project_dir = project_dir
        self.stack_file = project_dir / f"Pulumi.{name}.yaml"
        self.stack_file.unlink(missing_ok=True)
        self.pulumi("stack", "rm", "--yes", "--force", check=False)
        self.pulumi("stack", "init", self.name, "--secrets-provider", "passphrase", stack=False)

    def pulumi(self, *args: str, input: str | None = None, check: bool = True,
               stack: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        argv = ["pulumi", "--non-interactive", *args, *(["--stack", self.name] if stack else [])]
        done = subprocess.run(argv, cwd=self.project_dir, env=self.env, input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def configure(self, plain: dict[str, Any], secrets: dict[str, str]) -> None:
        doc = yaml.safe_load(self.stack_file.read_text()) or {}
        doc["config"] = {f"{PROJECT}:{k}": v for k, v in plain.items()}
        self.stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        for path, value in secrets.items():
            self.pulumi("config", "set", "--secret", "--path", f"{PROJECT}:{path}", input=value)

    def cli(self, *args: str, timeout: float = 900, input: str | None = None) -> subprocess.CompletedProcess:
        """`python -m cli ARGS --stack NAME` from the project dir; prints its output for the log."""
        argv = [sys.executable, "-m", "cli", *args, "--stack", self.name]
        done = subprocess.run(argv, cwd=self.project_dir, env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        print(f"$ python -m cli {' '.join(args)} --stack {self.name}  -> exit {done.returncode}\n"
              f"{done.stdout}{done.stderr}")
        return done

    def config(self) -> dict[str, Any]:
        doc = yaml.safe_load(self.stack_file.read_text()) or {}
        return {k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items()}

    def export(self) -> str:
        """The stack's state, for before/after comparisons."""
        return self.pulumi("stack", "export").stdout

    def remove(self) -> None:
        self.pulumi("stack", "rm", "--yes", "--force", check=False)
        self.stack_file.unlink(missing_ok=True)


def engine_env(toolchain_env: dict[str, str]) -> dict[str, str]:
    """The engine env without anything the CLI must not rely on from the test process."""
    env = dict(toolchain_env)
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    return env
