"""`--json` on `status` and `recover`: one object on stdout with the documented keys, whatever the
exit code; the human progress and `error:` lines stay on stderr."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from cli import recover
from cli.change import Outcome, Result, Timer
from cli.health import assess, health_json
from cli.plan import render
from tests.unit.test_cli_status import IMAGES, M1, M2, N1, healthy_probes, make_config

REPO = Path(__file__).resolve().parents[2]
ERROR_KEYS = {"command", "stack", "exit_code", "error"}
STATUS_KEYS = ERROR_KEYS | {"healthy", "master0", "domain", "images_expected", "master0_images",
                            "seconds", "problems", "hosts"}
HOST_KEYS = {"ip", "role", "deploy", "down", "reachable", "error", "registry", "registry_mode",
             "images", "resolves", "ca", "containerd", "replica", "tree", "flags", "lacking",
             "entry", "entry_error", "fence_pending"}
RECOVER_KEYS = ERROR_KEYS | {"outcome", "resumed", "old_master0", "master0", "down_hosts",
                             "preflight", "plan", "verified", "fence", "seconds"}
CLUSTER_HEX = "c" * 64


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # An `ssh` stand-in first on PATH (see refusing_ssh): the hosts below are never dialled.
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd,
        env={"PATH": f"{cwd / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


M0, NODE = "198.18.0.2", "198.18.0.3"   # never dialled: `ssh` is the stand-in below


def refusing_ssh(project: Path) -> None:
    """`<project>/bin/ssh`: answers every probe as OpenSSH does for a host with nothing on its SSH
    port (cluster hosts cannot be loopback addresses, which refuse for real), and logs its calls."""
    (project / "bin").mkdir()
    ssh = project / "bin" / "ssh"
    ssh.write_text('#!/bin/sh\nprintf \'%s\\n\' "$*" >>"$(dirname "$0")/calls"\n'
                   'for a; do host=$a; done\n'
                   'echo "ssh: connect to host ${host#*@} port 9: Connection refused" >&2\nexit 255\n')
    ssh.chmod(0o755)


def loopback_stack(tmp_path: Path, down_hosts=()) -> Path:
    """A project whose hosts refuse every SSH connection at once (see refusing_ssh)."""
    refusing_ssh(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: sealer-registry\nruntime: python\n")
    (tmp_path / "id").write_text("not a key\n")
    (tmp_path / "kubeconfig").write_text("")
    config = {
        "master0": M0, "distribution": "pre", "down_hosts": list(down_hosts),
        "cluster": {"name": "loop", "masters": [M0], "nodes": [NODE],
                    "ssh": {"user": "root", "port": 9, "private_key_path": "id"}},
        "registry": {"local_registry": {"insecure_mode": True}},
        "apps": {"image_store": {"registry": "198.18.0.1:5443", "images": {
                     f"sha256:{CLUSTER_HEX}": ["sealer/cluster:v1@sha256:" + "d" * 64]}},
                 "cluster_image_id": f"sha256:{CLUSTER_HEX}",
                 "history": {"type": "boot", "applications": []}},
        "kubernetes": {"kubeconfig_path": "kubeconfig"},
    }
    (tmp_path / "Pulumi.loop.yaml").write_text(yaml.safe_dump(
        {"config": {f"sealer-registry:{k}": v for k, v in config.items()}}))
    return tmp_path


def test_status_json_of_unreachable_hosts_is_degraded_with_every_key(tmp_path):
    result = run_cli("status", "--stack", "loop", "--json", cwd=loopback_stack(tmp_path))
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert set(doc) == STATUS_KEYS
    assert (doc["command"], doc["stack"], doc["exit_code"], doc["error"], doc["healthy"]) == (
        "status", "loop", 1, None, False)
    assert [set(h) for h in doc["hosts"]] == [HOST_KEYS, HOST_KEYS]
    master0 = doc["hosts"][0]
    assert (master0["ip"], master0["role"], master0["deploy"], master0["reachable"]) == (
        M0, "master0", "launch", False)
    assert master0["error"] == "Connection refused" and master0["registry"] is None
    assert doc["problems"][0].startswith(f"{M0} (master0) is unreachable: Connection refused")


def test_status_json_lists_a_down_host_as_not_probed(tmp_path):
    result = run_cli("status", "--stack", "loop", "--json",
                     cwd=loopback_stack(tmp_path, down_hosts=[NODE]))
    node = json.loads(result.stdout)["hosts"][1]
    assert (node["down"], node["reachable"], node["error"]) == (True, None, None)
    calls = (tmp_path / "bin" / "calls").read_text()
    assert M0 in calls and NODE not in calls


def test_status_json_of_a_missing_stack_is_an_error_object(tmp_path):
    result = run_cli("status", "--stack", "nope", "--project-dir", str(tmp_path), "--json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert set(doc) == ERROR_KEYS
    assert (doc["command"], doc["stack"], doc["exit_code"]) == ("status", "nope", 2)
    assert doc["error"].startswith(f"stack file {tmp_path}/Pulumi.nope.yaml not found")
    assert result.stderr.startswith("error: stack file")


def test_recover_json_refusal_is_an_error_object():
    result = run_cli("recover", "master0", "--host", "198.18.0.21", "--stack", "dev", "--json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert doc == {"command": "recover", "stack": "dev", "exit_code": 2,
                   "error": "198.18.0.21 is a node, not a master: master0 must be one of the "
                            "masters (198.18.0.11, 198.18.0.12, 198.18.0.13)"}


def test_health_json_reports_typed_values_of_reachable_hosts():
    """Counts are numbers, flags booleans; images only for deploy hosts."""
    doc = health_json(make_config(), assess(make_config(), IMAGES, healthy_probes()), 0.5)
    assert doc["healthy"] is True and doc["images_expected"] == 2 and doc["master0_images"] == 2
    m1, _, m3, n1 = doc["hosts"]
    assert m1 == {"ip": M1, "role": "master0", "deploy": "launch", "down": False, "reachable": True,
                  "error": None, "registry": "running", "registry_mode": None, "images": 2, "resolves": M1, "ca": "ok",
                  "containerd": "certs.d",
                  "replica": {"source": "self", "age_s": 180, "files": 12, "bytes": 3456},
                  "tree": None, "flags": 0, "lacking": None, "entry": None, "entry_error": None,
                  "fence_pending": False}
    assert (m3["deploy"], m3["replica"]) == ("none", None)
    assert (m3["deploy"], m3["images"], n1["role"], n1["images"]) == ("none", None, "node", None)


def recovery_result(healthy: bool) -> Result:
    config = make_config(master0=M2, down_hosts=[M1])
    probes = healthy_probes(master0=M2)
    del probes[M1]
    if not healthy:
        probes[N1].resolves = M1
    plan = render({f"registry-launch-{M2}": "create", f"node-{N1}": "update"},
                  master0=M2, domain="sea.hub", down_hosts=[M1], old_master0=M1)
    return Result(Outcome.APPLIED, plan, config, assess(config, IMAGES, probes))


def document(result: Result) -> dict:
    args = argparse.Namespace(host=M2, stack="prod")
    timer = Timer()
    timer.add("preflight", 0.25)
    checked = {"host": M2, "replica_images": 2, "images_expected": 2, "disk_avail_bytes": 10,
               "needed_bytes": 0}
    return recover.document(args, M1, [M1], checked, result, timer, result.exit_code)


def test_recover_json_of_a_verified_recovery_has_every_key():
    doc = document(recovery_result(healthy=True))
    assert set(doc) == RECOVER_KEYS
    assert (doc["outcome"], doc["exit_code"], doc["error"], doc["resumed"]) == ("applied", 0, None, False)
    assert (doc["old_master0"], doc["master0"], doc["down_hosts"]) == (M1, M2, [M1])
    assert doc["plan"]["launch_on"] == [M2] and doc["plan"]["repointed"] == [N1]
    assert doc["verified"] == {"healthy": True, "master0_images": 2, "images_expected": 2,
                               "problems": []}
    assert doc["seconds"] == {"preflight": 0.25}
    json.dumps(doc)  # serialisable as it is


def test_recover_json_of_a_failed_check_says_so_and_exits_1():
    doc = document(recovery_result(healthy=False))
    assert doc["exit_code"] == 1 and doc["verified"]["healthy"] is False
    assert doc["error"].startswith("the status check after `up` found 1 problems")


def test_recover_json_of_a_preview_has_no_verification():
    previewed = Result(Outcome.PREVIEWED, recovery_result(healthy=True).plan)
    doc = document(previewed)
    assert (doc["outcome"], doc["exit_code"], doc["verified"]) == ("previewed", 0, None)
