"""The lab stand-in plugins (lab/plugins/) under the real `pulumi` CLI: a throwaway project in a
temp dir, run from its work_dir (so through the stand-in language host), with local.Command and
remote.Command (through the stand-in provider) against two lab hosts.

The steps build on each other and run in file order; the lab (srl-11, srl-12) is this module's.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from lab import Lab
from lab.hosts import PREFIX

pytestmark = pytest.mark.e2e

PLUGINS = Path(__file__).resolve().parents[2] / "lab" / "plugins"
PAYLOADS = ("payload-one-7f1c", "payload-two-93ab")
RUNS = "/tmp/e2e-plugin-runs"
PAYLOAD_FILE = "/tmp/e2e-plugin-payload"

PROGRAM = textwrap.dedent(f"""\
    import pulumi
    from pulumi_command import local, remote

    cfg = pulumi.Config()
    payload = cfg.require_secret("payload")
    local.Command("local", create="cat > local-out; echo local-ok", stdin=payload,
                  dir=cfg.require("workdir"))
    if not cfg.get_bool("drop_remote"):
        conn = remote.ConnectionArgs(host=cfg.require("host"), host_key=cfg.require("host_key"),
                                     private_key=cfg.require_secret("key"), per_dial_timeout=5)
        remote.Command("remote", connection=conn, stdin=payload,
                       create="cat > {PAYLOAD_FILE}; hostname >> {RUNS}; hostname")
""")


def plugins_env(base: dict[str, str]) -> dict[str, str]:
    """The toolchain environment with lab/plugins right after the toolchain's bin dir: the engine
    finds pulumi-language-python and pulumi-resource-command there (no downloads)."""
    env = dict(base)
    parts = env["PATH"].split(os.pathsep)
    env["PATH"] = os.pathsep.join([parts[0], str(PLUGINS), *parts[1:]])
    return env


class Project:
    """The throwaway project and the CLI run in its work_dir."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.dir = root / "project"
        self.dir.mkdir()
        (self.dir / "Pulumi.yaml").write_text("name: plugin-e2e\nruntime: python\n")
        (self.dir / "__main__.py").write_text(PROGRAM)
        self.env = plugins_env(env)

    def pulumi(self, *args: str, input: str | None = None, check: bool = True,
               timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=self.dir, env=self.env,
                              input=input, text=True, capture_output=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} -> {done.returncode}\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def config(self, key: str, value: str, secret: bool = False) -> None:
        flags = ["--secret"] if secret else ["--plaintext"]
        self.pulumi("config", "set", *flags, key, input=value)  # the value on stdin

    def planned_ops(self) -> dict[str, str]:
        """`pulumi preview --json`: resource name -> op, for steps that change something."""
        plan = json.loads(self.pulumi("preview", "--json").stdout)
        return {s["urn"].split("::")[-1]: s["op"] for s in plan.get("steps", [])
                if s["op"] != "same"}

    def up(self) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        done = self.pulumi("up", "--yes", "--skip-preview")
        return done, time.monotonic() - started

    def export(self, show_secrets: bool = False) -> str:
        return self.pulumi("stack", "export", *(["--show-secrets"] if show_secrets else [])).stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    state = tmp_path_factory.mktemp("lab")
    Lab(state).down()  # a crashed earlier run holds the srl- names
    lab = Lab(state)
    lab.up(masters=2, nodes=0)
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def project(lab, toolchain_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    proj = Project(root, toolchain_env)
    proj.pulumi("stack", "init", "e2e")
    first = lab.host("11")
    proj.config("workdir", str(proj.dir))
    proj.config("host", first.ip)
    proj.config("host_key", first.host_key)
    proj.config("key", lab.key_path.read_text(), secret=True)
    proj.config("payload", PAYLOADS[0], secret=True)
    return proj


def runs_on(lab: Lab, ref: str) -> list[str]:
    return lab.run(ref, f"cat {RUNS} 2>/dev/null || true").stdout.split()


def test_plugins_are_found_on_path(project):
    """The engine says where it found each plugin (a warning for any plugin found on PATH)."""
    preview = project.pulumi("preview")
    shown = preview.stdout + preview.stderr
    for name in ("pulumi-language-python", "pulumi-resource-command"):
        assert f"using {name} from $PATH at {PLUGINS / name}" in shown


def test_up_runs_local_and_remote_commands(project, lab):
    done, _ = project.up()
    assert (project.dir / "local-out").read_text() == PAYLOADS[0]
    assert lab.run("11", f"cat {PAYLOAD_FILE}").stdout == PAYLOADS[0]
    assert runs_on(lab, "11") == [f"{PREFIX}11"]
    outputs = json.loads(project.export())["deployment"]["resources"]
    remote = next(r for r in outputs if r["urn"].endswith("::remote"))
    assert remote["outputs"]["stdout"] == f"{PREFIX}11"


def test_second_up_changes_nothing(project, lab):
    assert project.planned_ops() == {}
    project.pulumi("up", "--yes", "--expect-no-changes")
    assert runs_on(lab, "11") == [f"{PREFIX}11"]


def test_stdin_change_is_an_update_that_runs(project, lab):
    project.config("payload", PAYLOADS[1], secret=True)
    assert project.planned_ops() == {"local": "update", "remote": "update"}
    project.up()
    assert lab.run("11", f"cat {PAYLOAD_FILE}").stdout == PAYLOADS[1]
    assert runs_on(lab, "11") == [f"{PREFIX}11", f"{PREFIX}11"]


def test_host_change_updates_on_the_new_host(project, lab):
    second = lab.host("12")
    project.config("host", second.ip)
    project.config("host_key", second.host_key)
    assert project.planned_ops() == {"remote": "update"}
    project.up()
    assert runs_on(lab, "12") == [f"{PREFIX}12"]
    assert lab.run("12", f"cat {PAYLOAD_FILE}").stdout == PAYLOADS[1]
    assert runs_on(lab, "11") == [f"{PREFIX}11", f"{PREFIX}11"]  # the old host is not contacted


def test_delete_without_delete_command_does_not_dial_a_dead_host(project, lab):
    lab.kill("12")
    try:
        before = lab.packets_to("12")
        project.config("drop_remote", "true")
        assert project.planned_ops() == {"remote": "delete"}
        _, elapsed = project.up()
        assert lab.packets_to("12") == before
        assert elapsed < 60  # a dial would retry 10 times with 5 s timeouts
    finally:
        lab.revive("12")
    state = json.loads(project.export())["deployment"]["resources"]
    assert not [r for r in state if r["urn"].endswith("::remote")]


def test_secrets_never_reach_the_state_in_plaintext(project, lab):
    exported = project.export()
    key_body = lab.key_path.read_text().splitlines()[1]
    for secret in (*PAYLOADS, key_body):
        assert secret not in exported
    assert PAYLOADS[1] in project.export(show_secrets=True)  # the check above can fail
