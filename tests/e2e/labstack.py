"""Shared e2e fixtures: a lab of real hosts with generated images (``lab.stack``'s harness), and
a stack of this project configured for it the way an operator would (plain values in the stack
file, secrets through `pulumi config set --secret --path` on stdin) and driven through the CLI.

Use in a test module with ``from tests.e2e.labstack import lab_env  # noqa: F401``. The lab's
host names (srl-*) are global to the machine: one lab at a time, so ``lab_env`` is module-scoped
and takes its lab down when the module ends.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import PROJECT
from lab import Lab
from lab import postgres as lab_postgres
from lab import store as lab_store
from lab.controlplane import ControlPlaneError
from lab.hosts import REPO, LabError
from lab.stack import DOMAIN, PORT, LabEnv, make_lab_env


@pytest.fixture(scope="module")
def lab_env(toolchain_bin, tmp_path_factory):
    """A fresh lab (3 masters, each with an etcd member and a kube-apiserver; 2 nodes) with small
    generated images, for one test module. Its kubeconfig names master0's apiserver."""
    state = tmp_path_factory.mktemp("lab")
    Lab(state).down()  # a crashed earlier run holds the srl- names
    try:
        env = make_lab_env(state, bin_dir=toolchain_bin)
    except ControlPlaneError as e:
        Lab(state).down()
        pytest.fail(f"the lab's control plane did not come up: {e}", pytrace=False)
    yield env
    env.lab.down()


@pytest.fixture(scope="module")
def state_db(lab_env) -> lab_postgres.StateDb:
    """The team's shared state (issue 22): a real PostgreSQL on the lab's db host, for one
    module; ``lab_env``'s `down` removes it."""
    try:
        return lab_postgres.up(lab_env.lab)
    except LabError as e:
        pytest.fail(f"the lab's state database did not come up: {e}", pytrace=False)


@pytest.fixture(scope="module")
def postgres_env(toolchain_env, state_db) -> dict[str, str]:
    """``toolchain_env`` with the stack's state in PostgreSQL (`postgres://`, no secret in the
    URL: the password is in the 0600 pgpass file it names) instead of a file backend."""
    return dict(toolchain_env, **state_db.env())


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
        "apps": {"history_file": str(env.history_file),
                 "image_store": lab_store.config_for(env.lab.state, env.store),
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

    def cli(self, *args: str, timeout: float = 900, input: str | None = None,
            named: bool = True) -> subprocess.CompletedProcess:
        """`python -m cli ARGS --stack NAME` from the project dir (without --stack unless
        ``named``: the CLI then asks the engine for the selected stack); prints its output."""
        stack = ["--stack", self.name] if named else []
        argv = [sys.executable, "-m", "cli", *args, *stack]
        done = subprocess.run(argv, cwd=self.project_dir, env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        print(f"$ python -m cli {' '.join([*args, *stack])}  -> exit {done.returncode}\n"
              f"{done.stdout}{done.stderr}")
        return done

    def select(self) -> None:
        """`pulumi stack select NAME`, as an operator makes it the default stack."""
        self.pulumi("stack", "select", self.name, stack=False)

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
