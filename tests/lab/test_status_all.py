"""`cli status --all` on a real lab: two clusters on disjoint hosts of one lab (east: master
.11 + node .21, west: master .12 + node .22), one stack each, both deployed by the real engine
(the toolchain's `pulumi up`, a file:// backend), listed by the real `pulumi stack ls --json`
and probed over real SSH. Healthy, both rows say so; then west's node is killed (its packets
dropped) and west's row is degraded while east's stays healthy. A third stack file whose config
does not validate is an error row and stops nothing.

The lab's control plane runs on both masters (one etcd, one apiserver per master): the two
clusters share its kube-system, where both stacks keep their records (status does not read them).
Needs the engine toolchain (`make toolchain`) for `pulumi`, etcd and kube-apiserver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from config import PROJECT
from lab import Lab, toolchain
from lab import store as lab_store
from lab.hosts import REPO
from lab.stack import DOMAIN, PORT, SECRETS, make_lab_env

pytestmark = pytest.mark.toolchain  # the engine toolchain (make toolchain)

PASSPHRASE = "sealer-lab"
STACKS = ("east", "west")
# The project as an operator's checkout holds it, without the repository's example stack files
# (Pulumi.dev.yaml would be one more row).
PROGRAM = ("Pulumi.yaml", "__main__.py", "kubeapi.py", "topology.py", "cli", "components",
           "config", "material", "scripts", "requirements.txt")


def stack_config(env, name: str, master: str, node: str) -> dict:
    inv = env.inventory
    keys = {h["ip"]: h["host_key"] for h in inv["hosts"] if h["ip"] in (master, node)}
    return {
        "master0": master, "down_hosts": [], "distribution": "pre",
        "cluster": {"name": inv["cluster"], "data_root": inv["data_root"],
                    "masters": [master], "nodes": [node],
                    "ssh": {"user": "root", "port": 22, "private_key_path": str(env.key_path),
                            "host_keys": keys}},
        "registry": {"domain": DOMAIN, "port": PORT, "username": "admin",
                     "local_registry": {"deploy_hosts": [master], "insecure_mode": False},
                     "tls": {"ca_cert": env.ca[0]}},
        "apps": {"history_file": str(env.history_file),
                 "image_store": lab_store.config_for(env.lab.state, env.store),
                 "cluster_image_id": env.cluster_image_id},
        "kubernetes": {"kubeconfig_path": str(env.kubeconfig), "cluster_identifier": name},
    }


def pulumi(engine: dict, project: Path, *args: str, input: str | None = None) -> str:
    done = subprocess.run(["pulumi", "--non-interactive", *args], cwd=project, env=engine,
                          input=input, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pulumi {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    missing = toolchain.explain_missing("pulumi", "pulumi-language-python", "etcd", "kube-apiserver")
    if missing:
        pytest.fail(missing, pytrace=False)
    state = tmp_path_factory.mktemp("lab")
    Lab(state).down()  # a crashed earlier run holds the names
    env = make_lab_env(state, masters=2, nodes=2, apps=1, app_size=64 << 10,
                       cluster_size=128 << 10, bin_dir=toolchain.bin_dir())
    try:
        base = tmp_path_factory.mktemp("engine")
        project = base / "project"
        project.mkdir()
        for name in PROGRAM:
            (project / name).symlink_to(REPO / name)
        (base / "state").mkdir()
        (base / "home").mkdir()
        engine = toolchain.env(dict(os.environ))
        engine.update(PULUMI_BACKEND_URL=f"file://{base / 'state'}",
                      PULUMI_CONFIG_PASSPHRASE=PASSPHRASE, PULUMI_HOME=str(base / "home"),
                      PULUMI_SKIP_UPDATE_CHECK="true", PYTHONPATH=str(REPO))
        engine.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        secrets = {**SECRETS, "registry.tls.ca_key": env.ca[1]}
        took = {}
        for name, master, node in zip(STACKS, env.masters, env.nodes):
            pulumi(engine, project, "stack", "init", name, "--secrets-provider", "passphrase")
            doc = yaml.safe_load((project / f"Pulumi.{name}.yaml").read_text()) or {}
            doc["config"] = {f"{PROJECT}:{k}": v
                             for k, v in stack_config(env, name, master, node).items()}
            (project / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            for path, value in secrets.items():
                pulumi(engine, project, "config", "set", "--secret", "--path", "--stack", name,
                       f"{PROJECT}:{path}", input=value)
            start = time.monotonic()
            pulumi(engine, project, "up", "--yes", "--skip-preview", "--stack", name)
            took[name] = time.monotonic() - start
        print(f"\npulumi up: {', '.join(f'{n} {s:.1f}s' for n, s in took.items())}")
        yield env, project, engine
    finally:
        env.lab.down()


def status_all(project: Path, engine: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "cli", "status", "--all", *args], cwd=project,
                          env=engine, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    took = time.monotonic() - start
    print(f"$ python -m cli status --all {' '.join(args)} -> exit {done.returncode} ({took:.1f}s)\n"
          f"{done.stdout}{done.stderr}")
    return done, took


def rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    assert lines[0].split()[:4] == ["STACK", "MASTER0", "HOSTS", "STATUS"], lines
    return {line.split()[0]: line.split() for line in lines[1:]
            if line and not line.startswith(("problem:", "error:", "healthy", "degraded"))}


def test_every_stack_healthy_then_a_dead_node_makes_its_stack_degraded(fleet):
    """Both deployed stacks: one healthy row each (hosts 2/2, every image on master0, updated
    moments ago), exit 0. West's node killed: west degraded (1/2 hosts, 1 problem naming the
    node), east still healthy, exit 1; --json says the same per stack."""
    env, project, engine = fleet
    (m1, m2), (n1, n2) = env.masters, env.nodes

    done, _ = status_all(project, engine)
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    assert list(table) == ["east", "west"]
    for name, master in (("east", m1), ("west", m2)):
        row = table[name]
        assert row[1:5] == [master, "2/2", "healthy", "0"], row
        have, want = row[5].split("/")
        assert have == want and int(want) > 0, row
        assert row[6].endswith("s") or row[6].endswith("m"), row   # "NNs ago" / "Nm ago"
        assert row[7] == "ago" and row[8] in ("no", "-"), row
    assert done.stdout.splitlines()[-1].startswith("healthy: 2 stacks: 2 healthy, 0 degraded, 0 error")

    env.lab.kill(n2)
    try:
        done, took = status_all(project, engine)
        doc_done, _ = status_all(project, engine, "--json")
    finally:
        env.lab.revive(n2)
    assert done.returncode == 1, done.stdout + done.stderr
    table = rows(done.stdout)
    assert table["east"][1:5] == [m1, "2/2", "healthy", "0"], table
    assert table["west"][1:5] == [m2, "1/2", "degraded", "1"], table
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and problems[0].startswith(f"problem: west: {n2} (node) is unreachable")
    assert done.stdout.splitlines()[-1].startswith("degraded: 2 stacks: 1 healthy, 1 degraded, 0 error")
    assert took < 15  # the dead node costs one ConnectTimeout (3 s), not one per stack

    assert doc_done.returncode == 1
    doc = json.loads(doc_done.stdout)
    by_name = {s["stack"]: s for s in doc["stacks"]}
    assert (doc["exit_code"], doc["healthy"], sorted(by_name)) == (1, False, ["east", "west"])
    east, west = by_name["east"], by_name["west"]
    assert (east["status"], east["hosts_reachable"], east["problems"]) == ("healthy", 2, [])
    assert (west["status"], west["hosts_reachable"], west["hosts_total"]) == ("degraded", 1, 2)
    assert [h["reachable"] for h in west["hosts"]] == [True, False]
    assert east["last_update"] and east["in_backend"] and east["resource_count"] > 0


def test_a_stack_file_that_does_not_validate_is_an_error_row_and_stops_nothing(fleet):
    """Pulumi.broken.yaml (not in the backend, registry.port 99999): an error row naming the
    field and the value; east and west are still probed and healthy; exit 1."""
    env, project, engine = fleet
    doc = yaml.safe_load((project / "Pulumi.east.yaml").read_text())
    doc["config"][f"{PROJECT}:registry"]["port"] = 99999
    broken = project / "Pulumi.broken.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        done, _ = status_all(project, engine)
    finally:
        broken.unlink()
    assert done.returncode == 1, done.stdout + done.stderr
    table = rows(done.stdout)
    assert list(table) == ["east", "west", "broken"]
    assert table["east"][3] == table["west"][3] == "healthy", table
    assert table["broken"][1:5] == ["-", "-", "error", "-"], table
    assert " ".join(table["broken"][6:9]) == "not in backend", table
    assert "error: broken: registry.port: 99999 is not a valid port (1-65535)" in done.stdout
