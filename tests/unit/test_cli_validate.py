"""`python -m cli validate` as a user runs it: a real subprocess, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dev_stack_is_valid():
    """The committed example stack validates: exit 0 and a one-line summary on stdout."""
    result = run_cli("validate", "--stack", "dev")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: stack dev is valid (5 hosts, 2 deploy hosts, 3 images)\n"


def test_project_dir_option_finds_the_stack_from_elsewhere(tmp_path):
    """--project-dir points at the directory holding Pulumi.<stack>.yaml."""
    result = run_cli("validate", "--stack", "dev", "--project-dir", str(REPO), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


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
