"""The operator commands' argument errors and offline refusals, run as a user runs them: one
clear `error:` line on stderr, exit 2, nothing dialled and no engine needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("init-pki", "status", "recover", "rejoin")


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_an_example(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "example" in result.stdout and f"python -m cli {command}" in result.stdout


@pytest.mark.parametrize("command", ("validate", *COMMANDS))
def test_without_stack_and_without_an_engine_each_command_says_how_to_name_one(command):
    """No --stack: the engine is asked for the selected stack; with no `pulumi` on PATH that is
    one line naming --stack, exit 2, before anything else is read or dialled."""
    extra = {"recover": ["master0", "--host", "198.18.0.12"], "rejoin": ["--host", "198.18.0.11"]}
    line = one_error(run_cli(command, *extra.get(command, [])))
    assert line.startswith("error: no --stack given, and no engine to ask which stack is selected")
    assert line.endswith("or pass --stack NAME")


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


def test_recover_refuses_a_host_outside_the_cluster():
    line = one_error(run_cli("recover", "master0", "--host", "198.18.0.99", "--stack", "dev"))
    assert line == ("error: 198.18.0.99 is not a host of cluster my-cluster (masters: 198.18.0.11, "
                    "198.18.0.12, 198.18.0.13; nodes: 198.18.0.21, 198.18.0.22)")


def test_recover_refuses_a_node():
    line = one_error(run_cli("recover", "master0", "--host", "198.18.0.21", "--stack", "dev"))
    assert line.startswith("error: 198.18.0.21 is a node, not a master")


def test_recover_refuses_a_master_that_is_not_a_deploy_host():
    line = one_error(run_cli("recover", "master0", "--host", "198.18.0.13", "--stack", "dev"))
    assert line.startswith("error: 198.18.0.13 is not a deploy host")


def test_recover_refuses_a_bad_ip_and_an_unknown_target():
    assert one_error(run_cli("recover", "master0", "--host", "x", "--stack", "dev")) == \
        "error: --host 'x' is not an IP address"
    result = run_cli("recover", "master1", "--host", "198.18.0.12", "--stack", "dev")
    assert result.returncode == 2 and "invalid choice: 'master1'" in result.stderr


def test_rejoin_refuses_a_host_that_is_not_down():
    line = one_error(run_cli("rejoin", "--host", "198.18.0.12", "--stack", "dev"))
    assert line == "error: 198.18.0.12 is not listed in down_hosts (empty): nothing to rejoin"


def test_status_of_a_missing_stack_is_one_line(tmp_path):
    line = one_error(run_cli("status", "--stack", "nope", "--project-dir", str(tmp_path)))
    assert line.startswith(f"error: stack file {tmp_path}/Pulumi.nope.yaml not found")


def test_init_pki_refuses_to_replace_an_existing_ca():
    """Pulumi.dev.yaml has a CA: without --force nothing is generated and no engine is needed."""
    line = one_error(run_cli("init-pki", "--stack", "dev"))
    assert line == ("error: stack dev already has registry.tls.ca_cert: nodes trust that CA; "
                    "pass --force to replace it")


def test_init_pki_refuses_an_insecure_registry(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: sealer-registry\nruntime: python\n")
    (tmp_path / "Pulumi.plain.yaml").write_text(
        "config:\n  sealer-registry:registry:\n    local_registry:\n      insecure_mode: true\n")
    line = one_error(run_cli("init-pki", "--stack", "plain", "--project-dir", str(tmp_path)))
    assert "insecure_mode is true" in line


def test_init_pki_without_pulumi_on_path_says_so(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: sealer-registry\nruntime: python\n")
    (tmp_path / "Pulumi.new.yaml").write_text("config: {}\n")
    line = one_error(run_cli("init-pki", "--stack", "new", "--project-dir", str(tmp_path)))
    assert line == "error: `pulumi` is not on PATH: install the Pulumi CLI or pass --pulumi PATH"
