"""`status --all` (cli/fleet.py, cli/status.py): the stacks come from the engine's listing and the
project's stack files; every stack is probed at once under one bound on SSH sessions; one row per
stack, an error row for a stack that cannot be checked; exit 0 / 1 / 2.

The engine and ssh are fakes on PATH here (shell scripts): the listing a real `pulumi stack ls
--json` prints, and an ssh that logs when each session starts and ends. tests/lab/test_status_all.py
runs the real ones."""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cli import fleet
from cli.common import CliError
from cli.health import assess
from cli.probe import HostProbe
from tests.unit.test_cli_status import IMAGES, M1, healthy_probes, make_config

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.datetime(2026, 12, 6, 18, 0, 0, tzinfo=datetime.timezone.utc)
LISTING = [
    {"name": "a", "current": True, "lastUpdate": "2026-12-06T17:57:00.000Z", "resourceCount": 40},
    {"name": "b", "current": False, "lastUpdate": "2026-12-04T18:00:00Z", "updateInProgress": True},
]


# -- the listing ------------------------------------------------------------------------------

def test_listing_keeps_last_update_and_says_unknown_when_in_progress_is_not_reported():
    a, b = fleet.parse_listing(json.dumps(LISTING))
    assert (a.name, a.last_update, a.update_in_progress, a.resource_count) == (
        "a", "2026-12-06T17:57:00.000Z", None, 40)
    assert (b.name, b.update_in_progress, b.resource_count) == ("b", True, None)
    assert a.in_backend and b.in_backend


@pytest.mark.parametrize("text", ["not json", '{"name": "a"}', '[{"nom": "a"}]', '[1]'])
def test_a_listing_that_is_not_a_list_of_stacks_is_refused(text):
    with pytest.raises(CliError) as e:
        fleet.parse_listing(text)
    assert "pulumi stack ls --json" in e.value.message and e.value.code == 2


def test_stack_files_the_backend_lacks_come_after_the_listing():
    """The listing's order first; a file whose stack is listed (by its short name, as an
    org/project/stack name ends) is not repeated."""
    listed = fleet.parse_listing(json.dumps([{"name": "org/sealer-registry/b"}, {"name": "a"}]))
    joined = fleet.join_stacks(listed, ["a", "b", "c"])
    assert [(e.name, e.in_backend) for e in joined] == [
        ("org/sealer-registry/b", True), ("a", True), ("c", False)]


def test_stack_file_names_are_the_project_stack_files(tmp_path):
    for name in ("Pulumi.yaml", "Pulumi.prod.yaml", "Pulumi.eu-1.yaml", "Pulumi..yaml", "other.yaml"):
        (tmp_path / name).write_text("")
    assert fleet.stack_file_names(tmp_path) == ["eu-1", "prod"]


@pytest.mark.parametrize("stamp, shown", [
    ("2026-12-06T17:59:58.000Z", "2s ago"), ("2026-12-06T17:57:00Z", "3m ago"),
    ("2026-12-06T15:00:00+00:00", "3h ago"), ("2026-12-04T18:00:00Z", "2d ago"),
    (None, "never"), ("yesterday", "yesterday")])
def test_update_age(stamp, shown):
    assert fleet.update_age(stamp, NOW) == shown


# -- rows -------------------------------------------------------------------------------------

def probed_row(name: str, probes, last_update="2026-12-06T17:57:00Z", in_progress=None):
    config = make_config()
    result = assess(config, IMAGES, probes)
    from cli.health import health_json
    return fleet.StackRow(
        fleet.StackEntry(name, last_update=last_update, update_in_progress=in_progress),
        "healthy" if result.healthy else "degraded", master0=config.master0,
        hosts_total=len(result.hosts), hosts_reachable=sum(1 for h in result.hosts if h.reachable),
        result=result, health=health_json(config, result, 0.5), seconds=0.5)


def rows_for_render() -> list[fleet.StackRow]:
    dead = healthy_probes()
    dead[M1] = HostProbe(ip=M1, reachable=False, error="Connection timed out")
    error = fleet.StackRow(fleet.StackEntry("bad", in_backend=False), "error",
                           error="registry.port: 99999 is not a valid port (1-65535)")
    return [probed_row("east", healthy_probes()), probed_row("west", dead, in_progress=True), error]


def test_table_has_one_row_per_stack_with_every_column():
    lines = fleet.render_table(rows_for_render(), NOW).splitlines()
    assert lines[0].split() == ["STACK", "MASTER0", "HOSTS", "STATUS", "PROBLEMS", "IMAGES",
                                "LAST", "UPDATE", "UPDATING"]
    assert lines[1].split() == ["east", M1, "4/4", "healthy", "0", "2/2", "3m", "ago", "-"]
    assert lines[2].split() == ["west", M1, "3/4", "degraded", "1", "0/2", "3m", "ago", "yes"]
    assert lines[3].split() == ["bad", "-", "-", "error", "-", "-", "not", "in", "backend", "-"]
    # aligned: every column starts where its head starts
    assert lines[1].index("healthy") == lines[0].index("STATUS") == lines[3].index("error")


def test_report_names_each_error_and_problem_with_its_stack_then_a_summary():
    lines = fleet.report_lines(rows_for_render(), 2.25, NOW)
    assert lines[4:] == [
        f"problem: west: {M1} (master0) is unreachable: Connection timed out; if it is dead, "
        "recover with `recover master0 --host <master>`",
        "error: bad: registry.port: 99999 is not a valid port (1-65535)",
        "degraded: 3 stacks: 1 healthy, 1 degraded, 1 error (2.2s)"]


def test_summary_is_healthy_only_when_every_stack_is():
    rows = rows_for_render()[:1]
    assert fleet.summary_line(rows, 1.0) == "healthy: 1 stacks: 1 healthy, 0 degraded, 0 error (1.0s)"


def test_json_entry_keeps_the_status_json_keys_and_adds_the_listing():
    east, west, bad = (r.as_json() for r in rows_for_render())
    single = {"healthy", "master0", "domain", "images_expected", "master0_images", "hosts",
              "problems", "seconds"}
    assert single <= set(east)
    assert (east["stack"], east["status"], east["exit_code"], east["error"]) == ("east", "healthy", 0, None)
    assert (east["last_update"], east["update_in_progress"], east["in_backend"]) == (
        "2026-12-06T17:57:00Z", None, True)
    assert (east["hosts_total"], east["hosts_reachable"], len(east["hosts"])) == (4, 4, 4)
    assert (west["status"], west["exit_code"], west["update_in_progress"]) == ("degraded", 1, True)
    assert (bad["status"], bad["exit_code"], bad["in_backend"], bad["master0"]) == ("error", 1, False, None)
    assert "99999" in bad["error"] and "hosts" not in bad
    doc = fleet.fleet_json(rows_for_render(), 1.234)
    assert (doc["all"], doc["healthy"], doc["seconds"], [s["stack"] for s in doc["stacks"]]) == (
        True, False, 1.23, ["east", "west", "bad"])


# -- the bound --------------------------------------------------------------------------------

def test_check_stacks_keeps_order_and_runs_every_stack_in_parallel():
    """Rows come back in the listing's order whatever order the checks end in, and the checks
    overlap (4 stacks of 0.3 s each take well under 4 x 0.3 s)."""
    entries = [fleet.StackEntry(n) for n in "abcd"]

    def check(entry, args, gate):
        time.sleep(0.3 if entry.name != "a" else 0.5)
        return fleet.StackRow(entry, "healthy")

    start = time.monotonic()
    rows = fleet.check_stacks(entries, argparse.Namespace(), 8, check=check)
    assert [r.entry.name for r in rows] == list("abcd")
    assert time.monotonic() - start < 1.0


def test_the_gate_is_one_semaphore_shared_by_every_stack():
    """Each stack's check receives the same gate, which admits ``sessions`` holders at once."""
    seen = []

    def check(entry, args, gate):
        seen.append(gate)
        return fleet.StackRow(entry, "healthy")

    fleet.check_stacks([fleet.StackEntry(n) for n in "abc"], argparse.Namespace(), 2, check=check)
    assert len({id(g) for g in seen}) == 1
    gate = seen[0]
    assert gate.acquire(blocking=False) and gate.acquire(blocking=False)
    assert not gate.acquire(blocking=False)


# -- the command, with a fake engine and a fake ssh ---------------------------------------------

FAKE_PULUMI = """#!/bin/sh
# Answers `stack ls --json` and `config get` of the SSH key as the engine does; logs each call;
# anything else (e.g. `stack select`, `version`) fails.
echo "$*" >>"$FAKE_LISTING.calls"
case "$*" in
  "--non-interactive stack ls --json")
    if [ -n "${FAKE_LISTING_ERROR:-}" ]; then echo "error: $FAKE_LISTING_ERROR" >&2; exit 255; fi
    cat "$FAKE_LISTING" ;;
  "--non-interactive config get --path sealer-registry:cluster.ssh.private_key --stack "*)
    echo "fake key" ;;
  *) echo "error: unexpected: $*" >&2; exit 3 ;;
esac
"""
FAKE_SSH = """#!/bin/sh
# `ssh -Q kex` (cli/ssh.py asks which key exchanges it knows: no session) is not counted.
if [ "$1" = "-Q" ]; then exit 0; fi
# Logs when each session starts and ends; prints no probe output (the host reads as unreachable).
cat >/dev/null
echo "start $(date +%s.%N)" >>"$FAKE_SSH_LOG"
sleep "${FAKE_SSH_SLEEP:-0.3}"
echo "end $(date +%s.%N)" >>"$FAKE_SSH_LOG"
echo "ssh: connect to host: Connection refused" >&2
exit 255
"""


@pytest.fixture
def project(tmp_path):
    """A project dir with Pulumi.yaml, fakes on PATH, and a key for --ssh-key."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("pulumi", FAKE_PULUMI), ("ssh", FAKE_SSH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    key = tmp_path / "id"
    key.write_text("not a key\n")
    key.chmod(0o600)
    return {"dir": proj, "bin": bin_dir, "key": key, "log": tmp_path / "ssh.log",
            "listing": tmp_path / "listing.json"}


def add_stack(project, name: str, secret_key: bool = False, **registry) -> None:
    doc = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    doc["config"]["sealer-registry:registry"].update(registry)
    if secret_key:
        ssh = doc["config"]["sealer-registry:cluster"]["ssh"]
        del ssh["private_key_path"]
        ssh["private_key"] = {"secure": "v1:cGxhY2Vob2xkZXIh:a2V5"}
    (project["dir"] / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(doc))


def status_all(project, *args: str, listing=None, env=None,
               key: bool = True) -> subprocess.CompletedProcess:
    project["listing"].write_text(json.dumps(listing if listing is not None else []))
    full_env = {"PATH": f"{project['bin']}:/usr/bin:/bin", "PYTHONPATH": str(REPO),
                "HOME": str(project["dir"]), "FAKE_LISTING": str(project["listing"]),
                "FAKE_SSH_LOG": str(project["log"]), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cli", "status", "--all", "--project-dir", str(project["dir"]),
         *(["--ssh-key", str(project["key"])] if key else []), *args],
        cwd=project["dir"], env=full_env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)


def most_at_once(log: Path) -> tuple[int, int]:
    """(sessions logged, the most that ran at the same moment)."""
    events = []
    for line in log.read_text().splitlines():
        kind, stamp = line.split()
        events.append((float(stamp), 0 if kind == "end" else 1))
    running = peak = 0
    for _, start in sorted(events):
        running += 1 if start else -1
        peak = max(peak, running)
    return sum(1 for _, s in events if s), peak


def test_no_more_than_sessions_ssh_sessions_run_at_once_over_all_stacks(project):
    """3 stacks of 5 live hosts: 15 sessions, never more than 3 at once, and the bound is
    reached (so the stacks do run side by side)."""
    for name in ("a", "b", "c"):
        add_stack(project, name)
    listing = [{"name": n, "lastUpdate": "2026-12-06T17:00:00Z"} for n in ("a", "b", "c")]
    done = status_all(project, "--sessions", "3", listing=listing)
    assert done.returncode == 1, done.stderr
    assert most_at_once(project["log"]) == (15, 3)


def test_without_the_bound_every_host_of_every_stack_is_dialled_at_once(project):
    """The counterpart: a bound of 64 lets all 15 sessions run together (the fake ssh holds each
    for 1 s), so the previous test's 3 is the gate's doing."""
    for name in ("a", "b", "c"):
        add_stack(project, name)
    done = status_all(project, "--sessions", "64", listing=[{"name": n} for n in "abc"],
                      env={"FAKE_SSH_SLEEP": "1"})
    assert done.returncode == 1, done.stderr
    assert most_at_once(project["log"]) == (15, 15)


def test_a_bad_stack_is_an_error_row_naming_the_field_and_the_others_are_probed(project):
    """A stack file that does not validate and a listed stack without a file are error rows; the
    good stack is still probed (its unreachable hosts: degraded); exit 1."""
    add_stack(project, "good")
    add_stack(project, "bad", port=99999)
    listing = [{"name": "good"}, {"name": "bad"}, {"name": "gone"}]
    done = status_all(project, "--sessions", "8", listing=listing, env={"FAKE_SSH_SLEEP": "0"})
    assert done.returncode == 1, done.stderr
    out = done.stdout.splitlines()
    assert [line.split()[:4] for line in out[1:4]] == [
        ["good", "198.18.0.11", "0/5", "degraded"], ["bad", "-", "-", "error"],
        ["gone", "-", "-", "error"]]
    assert "error: bad: registry.port: 99999 is not a valid port (1-65535)" in out
    assert any(line.startswith("error: gone: stack file ") and "Pulumi.gone.yaml not found" in line
               for line in out)
    assert out[-1].startswith("degraded: 3 stacks: 0 healthy, 1 degraded, 2 error")
    assert most_at_once(project["log"])[0] == 5


def test_json_has_one_entry_per_stack(project):
    add_stack(project, "good")
    add_stack(project, "bad", port=99999)
    done = status_all(project, "--json", listing=[{"name": "good", "updateInProgress": False}],
                      env={"FAKE_SSH_SLEEP": "0"})
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["command"], doc["stack"], doc["exit_code"], doc["error"], doc["all"]) == (
        "status", None, 1, None, True)
    good, bad = doc["stacks"]
    assert (good["stack"], good["status"], good["update_in_progress"], good["in_backend"]) == (
        "good", "degraded", False, True)
    assert [h["reachable"] for h in good["hosts"]] == [False] * 5
    assert len(good["problems"]) == 5 and good["master0"] == "198.18.0.11"
    assert (bad["stack"], bad["status"], bad["in_backend"]) == ("bad", "error", False)
    assert bad["error"] == "registry.port: 99999 is not a valid port (1-65535)"


def test_secrets_are_decrypted_without_selecting_a_stack(project):
    """A stack whose SSH key is a secret: the engine decrypts it with `config get --stack`, and
    is never asked to `stack select` (which would change the operator's selected stack; the fake
    refuses it, and the stack would be an error row)."""
    add_stack(project, "a", secret_key=True)
    add_stack(project, "b", secret_key=True)
    done = status_all(project, "--json", listing=[{"name": "a"}, {"name": "b"}],
                      env={"FAKE_SSH_SLEEP": "0"}, key=False)
    assert [s["error"] for s in json.loads(done.stdout)["stacks"]] == [None, None], done.stdout
    calls = Path(f"{project['listing']}.calls").read_text().splitlines()
    assert sorted(calls) == sorted([
        "--non-interactive stack ls --json",
        "--non-interactive config get --path sealer-registry:cluster.ssh.private_key --stack a",
        "--non-interactive config get --path sealer-registry:cluster.ssh.private_key --stack b"])


def test_all_healthy_exits_0(project, monkeypatch, capsys):
    """Exit 0 only when every row is healthy (the probe itself is faked in-process here)."""
    from cli import status
    add_stack(project, "a")
    add_stack(project, "b")
    project["listing"].write_text(json.dumps([{"name": "a"}, {"name": "b"}]))
    monkeypatch.setenv("PATH", f"{project['bin']}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_LISTING", str(project["listing"]))
    monkeypatch.setattr(fleet, "check_cluster", lambda session: assess(
        make_config(), IMAGES, healthy_probes()))
    args = argparse.Namespace(
        all=True, stack=None, project_dir=str(project["dir"]), pulumi=None,
        ssh_key=str(project["key"]), json=False, sessions=4)
    assert status.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in out[1:3]] == ["healthy", "healthy"]
    assert out[-1].startswith("healthy: 2 stacks: 2 healthy")
    monkeypatch.setattr(fleet, "check_cluster", lambda session: assess(
        make_config(), IMAGES, {**healthy_probes(), M1: HostProbe(ip=M1, reachable=False)}))
    assert status.run(args) == 1


# -- bad input: exit 2 ------------------------------------------------------------------------

def test_all_with_stack_is_refused(project):
    done = status_all(project, "--stack", "a")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --all checks every stack: leave out --stack"


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_sessions_must_be_a_positive_number(project, value):
    done = status_all(project, "--sessions", value)
    assert done.returncode == 2 and "--sessions" in done.stderr


def test_a_failed_listing_is_one_error_line_exit_2(project):
    done = status_all(project, env={"FAKE_LISTING_ERROR": "could not reach the backend"})
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: cannot list the stacks of the backend (pulumi login): "
                                   "could not reach the backend")


def test_no_stack_at_all_is_exit_2_and_json_says_why(project):
    done = status_all(project, "--json")
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert doc["exit_code"] == 2 and doc["error"].startswith("no stack to check")


def test_no_engine_is_exit_2(project, tmp_path):
    (project["bin"] / "pulumi").unlink()
    done = status_all(project)
    assert done.returncode == 2 and "`pulumi` is not on PATH" in done.stderr


def test_ssh_access_holds_the_gate_around_each_session(tmp_path, monkeypatch):
    """SshAccess.run enters the gate before ssh starts and leaves it when ssh ends."""
    from cli.ssh import SshAccess, kex_option
    from components.remote_scripts import ScriptRun

    held = []

    class Gate:
        depth = 0

        def __enter__(self):
            Gate.depth += 1

        def __exit__(self, *exc):
            Gate.depth -= 1

    def fake_run(argv, **kwargs):
        held.append(Gate.depth)
        return subprocess.CompletedProcess(argv, 0, "", "")

    kex_option()    # asked once per process (`ssh -Q kex`), outside any session
    monkeypatch.setattr(subprocess, "run", fake_run)
    with SshAccess(make_config(), None, gate=Gate()) as access:
        access.run(M1, ScriptRun("true", None))
    assert held == [1] and Gate.depth == 0
