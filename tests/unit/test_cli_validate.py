"""`python -m cli validate` as a user runs it: a real subprocess, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_config import PKI

REPO = Path(__file__).resolve().parents[2]
STORE_CA = ".lab/store-registry/ca/store-ca.crt"  # apps.image_store.ca_file of Pulumi.dev.yaml


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def dev_project(tmp_path: Path, lab_files: bool = True) -> Path:
    """A project dir holding Pulumi.dev.yaml and, with `lab_files`, the `.lab/` files it names
    (the lab makes them; the repo has none)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.dev.yaml").write_text((REPO / "Pulumi.dev.yaml").read_text())
    if lab_files:
        (project / STORE_CA).parent.mkdir(parents=True)
        (project / STORE_CA).write_text(PKI.ca_cert)
        (project / ".lab" / "id_ed25519").write_text("key\n")
        (project / ".lab" / "kubeconfig").write_text("apiVersion: v1\n")
    return project


def test_dev_stack_is_valid(tmp_path):
    """The committed example stack validates where its lab files exist: exit 0 and a one-line
    summary on stdout."""
    result = run_cli("validate", "--stack", "dev", cwd=dev_project(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: stack dev is valid (5 hosts, 2 deploy hosts, 3 images)\n"


def test_project_dir_option_finds_the_stack_from_elsewhere(tmp_path):
    """--project-dir points at the directory holding Pulumi.<stack>.yaml; relative paths in it
    are relative to that directory, not to the current one."""
    result = run_cli("validate", "--stack", "dev", "--project-dir", str(dev_project(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_files_the_stack_names_must_exist(tmp_path):
    """Without the lab's files the dev stack names an SSH key, a kubeconfig and the image store's
    CA file that are not there: one line each, with the field and the resolved path."""
    project = dev_project(tmp_path, lab_files=False)
    result = run_cli("validate", "--stack", "dev", cwd=project)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: cluster.ssh.private_key_path: cannot read .lab/id_ed25519 ({project}/.lab/id_ed25519): No such file or directory",
        f"error: kubernetes.kubeconfig_path: cannot read .lab/kubeconfig ({project}/.lab/kubeconfig): No such file or directory",
        f"error: apps.image_store.ca_file: cannot read {STORE_CA} ({project}/{STORE_CA}): No such file or directory",
    ]


def test_missing_stack_file_exits_2_with_one_clear_line(tmp_path):
    """A stack without a file is an error naming the file, not a traceback."""
    result = run_cli("validate", "--stack", "nope", "--project-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: stack file {tmp_path}/Pulumi.nope.yaml not found "
        "(create it with `pulumi stack init`, or check --stack/--project-dir)"
    )
    assert result.stdout == ""


def test_invalid_stack_exits_2_with_one_line_per_problem(tmp_path):
    """Every problem is its own `error:` line on stderr."""
    text = (REPO / "Pulumi.dev.yaml").read_text()
    text = text.replace("port: 5000", "port: 0").replace("name: my-cluster", "name: My_Cluster")
    (tmp_path / "Pulumi.bad.yaml").write_text(text)
    result = run_cli("validate", "--stack", "bad", "--project-dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert "error: registry.port: 0 is not a valid port (1-65535)" in lines
    assert any(line.startswith("error: cluster.name: 'My_Cluster'") for line in lines)


@pytest.mark.parametrize("args", [("--help",), ("validate", "--help")])
def test_help_explains_with_an_example(args):
    """--help documents the command and shows an example invocation."""
    result = run_cli(*args)
    assert result.returncode == 0
    assert "python -m cli validate --stack dev" in result.stdout


def test_validate_requires_stack():
    """--stack is mandatory; argparse reports it with exit 2."""
    result = run_cli("validate")
    assert result.returncode == 2
    assert "--stack" in result.stderr


def test_no_command_is_a_usage_error():
    """Running without a subcommand prints usage and exits 2."""
    result = run_cli()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_commands_follow_the_module_protocol():
    """Each command module has NAME, HELP, register() and run(), so new commands plug in alike."""
    import importlib

    import cli

    for module_name in cli.COMMANDS:
        module = importlib.import_module(module_name)
        assert all(hasattr(module, attr) for attr in ("NAME", "HELP", "register", "run"))
