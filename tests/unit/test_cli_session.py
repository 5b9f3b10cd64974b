"""cli/session.py and cli/engine.py's `selected_stack`: without --stack a command works on the
stack the engine says is selected, as `pulumi` does; when there is none it says how to name one.

The engine here is a stand-in `pulumi` that answers `version` and `stack ls --json` the way the
real CLI does (the Automation API's own code reads it); tests/e2e/test_cli.py runs the real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_config import PKI

REPO = Path(__file__).resolve().parents[2]
STUB = """#!/bin/sh
case "$*" in
  version) echo v3.274.0 ;;
  *"stack ls --json"*) [ -n "$STUB_FAIL" ] && { echo "$STUB_FAIL" >&2; exit 255; }
                       printf '%s\\n' "$STUB_STACKS" ;;
  *) echo "error: unexpected pulumi $*" >&2; exit 3 ;;
esac
"""


@pytest.fixture
def engine(tmp_path):
    """Directory of a stand-in `pulumi`; its answers come from STUB_STACKS / STUB_FAIL."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(STUB)
    (bin_dir / "pulumi").chmod(0o755)
    return bin_dir


def run_cli(*args: str, engine: Path, stacks=(), fail: str = "", cwd: Path = REPO):
    env = {"PATH": f"{engine}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(engine),
           "STUB_STACKS": json.dumps(list(stacks)), "STUB_FAIL": fail}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def summary(name: str, current: bool) -> dict:
    return {"name": name, "current": current, "updateInProgress": False}


def project_with_dev_stack(tmp_path: Path) -> Path:
    """A copy of the project's files with Pulumi.dev.yaml and the local files it names (the lab
    makes them under .lab/; validate checks that they exist)."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        (project / name).write_text((REPO / name).read_text())
    (project / ".lab" / "store-registry" / "ca").mkdir(parents=True)
    (project / ".lab" / "store-registry" / "ca" / "store-ca.crt").write_text(PKI.ca_cert)
    (project / ".lab" / "id_ed25519").write_text("key\n")
    (project / ".lab" / "kubeconfig").write_text("kubeconfig\n")
    return project


def test_without_stack_the_selected_stack_is_used(engine, tmp_path):
    result = run_cli("validate", engine=engine, stacks=[summary("prod", False), summary("dev", True)],
                     cwd=project_with_dev_stack(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: stack dev is valid (5 hosts, 2 deploy hosts, 3 images)\n"


def test_a_named_stack_wins_over_the_selected_one(engine):
    result = run_cli("validate", "--stack", "nope", engine=engine, stacks=[summary("dev", True)])
    assert result.returncode == 2
    assert "Pulumi.nope.yaml not found" in result.stderr


def test_without_stack_and_none_selected_is_refused(engine):
    result = run_cli("status", engine=engine, stacks=[summary("dev", False)])
    assert result.returncode == 2
    assert result.stderr == ("error: no --stack given and no stack is selected: pass --stack NAME "
                             "or select one with `pulumi stack select NAME`\n")


def test_an_engine_that_cannot_list_stacks_is_one_line(engine):
    result = run_cli("status", engine=engine,
                     fail="error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: no --stack given, and the engine cannot say which stack is selected: "
        "PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions"]


def test_without_stack_a_directory_without_pulumi_yaml_is_refused(engine, tmp_path):
    result = run_cli("validate", engine=engine, stacks=[summary("dev", True)], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"error: no --stack given, and {tmp_path} holds no Pulumi.yaml to "
                             "find the selected stack of (check --project-dir)\n")


def test_the_selected_stack_is_named_in_json_errors(engine, tmp_path):
    """A refusal after the stack was selected names it, as --stack would."""
    (tmp_path / "Pulumi.yaml").write_text("name: sealer-registry\nruntime: python\n")
    result = run_cli("status", "--json", engine=engine, stacks=[summary("gone", True)], cwd=tmp_path)
    assert result.returncode == 2
    assert json.loads(result.stdout)["stack"] == "gone"
