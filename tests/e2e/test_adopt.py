"""Adopting a cluster as sealer left it (issue 19), as an operator does it: `python -m cli adopt
--from <master0>`, `python -m cli validate`, then `pulumi up`, on each flavour the lab makes from
sealer's source (lab/sealer_state.py): v0.11 in HA mode (sealer's default), v0.11 with `ha:
false`, and v0.8. Nothing hand-written: adopt reads the `sealer-clusterfile` ConfigMap, sealer's
application log and `cache/registry` flags, and decides the registry mode from the cluster.

The first `up` changes no node's trust (every trust file sealer wrote keeps its bytes, inode and
mtime; any file added holds the same certificate), no hosts line, and keeps every registry sealer
started (same pid); the second `up` does nothing. Then, in the flavours with one registry, master0
is killed and `recover` moves the registry onto a master holding a replica: real pulls on a docker
node and a basefs containerd node get every image. Real engine, real lab hosts, real
kube-apiserver, real dockerd and containerd.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from lab import controlplane
from lab import vip as lab_vip
from lab.hosts import REPO
from lab.sealer_state import CERTS_DIRS, SEA_HUB, make_sealer_state, pull
from lab.stack import ProgramStack
from tests.e2e.labstack import engine_env, lab_env  # noqa: F401  (module-scoped lab)

pytestmark = pytest.mark.e2e

FLAVOURS = ("v0.11-ha", "v0.11", "v0.8")
OPS_STACK = "e2e-adopt-ops"
PASSWORD_STACK = "e2e-adopt-password"


def stack_name(flavour: str) -> str:
    return "e2e-adopt-" + flavour.replace(".", "").replace("-", "")


def recover_stack(flavour: str) -> str:
    return stack_name(flavour) + "-recover"


STACKS = (*map(stack_name, FLAVOURS), *map(recover_stack, FLAVOURS), OPS_STACK, PASSWORD_STACK)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env=dict(env, PYTHONPATH=str(REPO)))
    print(f"$ python -m cli {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def trust_files(lab, ip: str, domain: str, port: int) -> dict[str, str]:
    """Every file under the host's certs.d directories of the registry: `sha256 inode mtime`."""
    dirs = " ".join(f"{d}/{name}:{port}" for d in CERTS_DIRS.values() for name in {domain, SEA_HUB})
    out = lab.run(ip, f"find {dirs} -type f 2>/dev/null | sort | while read -r f; do "
                      "printf '%s %s %s\\n' \"$f\" \"$(sha256sum < \"$f\" | cut -c1-64)\" "
                      "\"$(stat -c '%i %Y' \"$f\")\"; done", check=False).stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}


def registry_pids(lab, ip: str, port: int = 5000) -> list[int]:
    out = lab.run(ip, f"ss -Hltnp 'sport = :{port}' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u",
                  check=False).stdout
    return [int(p) for p in out.split()]


def forget(env: dict[str, str], *stacks: str) -> None:
    for name in stacks:
        subprocess.run(["pulumi", "stack", "rm", "--yes", "--force", "--stack", name], cwd=REPO,
                       env=env, capture_output=True)
        (REPO / f"Pulumi.{name}.yaml").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def engine(toolchain_env):
    env = engine_env(toolchain_env)
    forget(env, *STACKS)
    yield env
    forget(env, *STACKS)


@pytest.fixture(scope="module")
def cp(lab_env):  # noqa: F811
    return controlplane.up(lab_env.lab)


def make(lab_env, cp, flavour: str, **kw):  # noqa: F811
    history = json.loads(lab_env.history_file.read_text())
    ids = [lab_env.cluster_image_id, *(a["image_id"] for a in history["applications"])]
    return make_sealer_state(lab_env.lab, flavour=flavour, history=history, store=lab_env.store,
                             image_ids=ids, cp=cp, **kw)


def stamp(lab, sealer, ip: str) -> dict | None:
    done = lab.run(ip, f"cat {sealer.rootfs}/registry/.sealer-replica", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def pulls_everything(lab_env, sealer, nodes: list[str]) -> None:  # noqa: F811
    """Every image the lab generated, pulled for real on each node by the engine it runs (docker
    or basefs' containerd), trusting only what sealer wrote there; the tag resolves to the digest
    the image was pinned to."""
    lab = lab_env.lab
    engines = {sealer.runtimes[ip] for ip in nodes}
    assert "docker" in engines and any(e.startswith("containerd") for e in engines), sealer.runtimes
    for ip in nodes:
        for ref in lab_env.refs:
            repo_tag, digest = ref.split("@")
            got = pull(lab, sealer, ip, repo_tag)
            assert got.ok, f"{ip} ({sealer.runtimes[ip]}) {repo_tag}: {got.stderr[-400:]}"
            assert got.digest == digest, (ip, ref, got.digest)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_adopt_validate_and_up_keep_what_sealer_left(lab_env, cp, engine, flavour):  # noqa: F811
    sealer = make(lab_env, cp, flavour)
    doc = adopt_and_up(lab_env, sealer, engine, stack_name(flavour))
    local = doc["sealer-registry:registry"]["local_registry"]
    assert local.get("ha", False) is (flavour == "v0.11-ha")
    assert local["deploy_hosts"] == sealer.masters
    if flavour != "v0.8":
        history = doc["sealer-registry:apps"]["history"]
        types = {a["name"]: a.get("type") for a in history["applications"]}
        assert "shell" in types.values() and None in types.values(), types
        assert {a["image_id"].removeprefix("sha256:") for a in history["applications"]} \
            <= set(sealer.image_ids)
    pulls_everything(lab_env, sealer, sealer.nodes)
    if sealer.vip is not None:  # the VIP stays lvscare's: every master still a healthy backend
        for ip in sealer.nodes:
            assert lab_vip.status(lab_env.lab, ip) == {m: True for m in sealer.masters}, ip


@pytest.mark.parametrize("flavour", ("v0.11", "v0.8"))
def test_the_adopted_stack_recovers_onto_a_replica_of_sealers_data(lab_env, cp, engine,  # noqa: F811
                                                                   flavour):
    """No image store: the first `up` replicated sealer's registry tree host to host to the other
    masters (pre mode). With master0 dead, `recover` accepts a master holding a complete replica,
    moves the registry there without one packet to the dead master0, and every image pulls for
    real on the docker node and the containerd node with sealer's login and trust."""
    lab = lab_env.lab
    sealer = make(lab_env, cp, flavour)
    name = recover_stack(flavour)
    adopt_and_up(lab_env, sealer, engine, name)
    m0, new = sealer.master0, sealer.masters[1]
    lab.kill(m0)
    try:
        before = lab.packets_to(m0)
        done = cli(engine, "recover", "master0", "--host", new, "--stack", name, "--yes",
                   "--ssh-key", str(lab_env.key_path))
        assert done.returncode == 0, done.stderr
        assert f"data from {new}'s own replica" in done.stdout
        assert lab.packets_to(m0) == before
        assert stamp(lab, sealer, new)["source"] == "self"
        assert stamp(lab, sealer, sealer.masters[2])["source"] == new
        pulls_everything(lab_env, sealer, sealer.nodes)
    finally:
        lab.revive(m0)


def test_a_cluster_reached_as_a_non_root_user_with_sudo(lab_env, cp, engine):  # noqa: F811
    """sealer reaches the hosts as `ops` with passwordless sudo: adopt reads master0 as ops
    (sudo -n), the stack's user is ops, every step runs through sudo; the same guarantees hold."""
    sealer = make(lab_env, cp, "v0.11", ssh_user="ops")
    doc = adopt_and_up(lab_env, sealer, engine, OPS_STACK, "--user", "ops")
    assert doc["sealer-registry:cluster"]["ssh"]["user"] == "ops"


def test_a_cluster_reached_by_password(lab_env, cp, engine):  # noqa: F811
    """sealer reaches the hosts as `ops` by its passwd alone (no pk in the Clusterfile): the stack
    has no key, only cluster.ssh.password (a secret, the one the ConfigMap holds: the file's is
    stale); the engine logs in with it."""
    lab = lab_env.lab
    sealer = make(lab_env, cp, "v0.11", ssh_user="ops", ssh_pk=None)
    for ip in sealer.hosts:
        lab.run(ip, ": > /var/log/sshd.log", check=False)
    doc = adopt_and_up(lab_env, sealer, engine, PASSWORD_STACK, "--user", "ops")
    ssh = doc["sealer-registry:cluster"]["ssh"]
    assert set(ssh["password"]) == {"secure"}
    assert "private_key" not in ssh and "private_key_path" not in ssh
    for ip in sealer.hosts:  # the engine's steps logged in with the password
        log = lab.run(ip, "cat /var/log/sshd.log").stdout
        assert "Accepted password for ops" in log, ip


def adopt_and_up(lab_env, sealer, engine, name: str, *extra: str) -> dict:  # noqa: F811
    lab = lab_env.lab
    m0 = sealer.master0
    before = {ip: trust_files(lab, ip, sealer.domain, sealer.port) for ip in sealer.hosts}
    hosts_before = {ip: lab.run(ip, "cat /etc/hosts").stdout for ip in sealer.hosts}
    pids = {ip: registry_pids(lab, ip, sealer.port) for ip in sealer.registry_hosts}
    assert all(len(p) == 1 for p in pids.values()), pids

    adopted = cli(engine, "adopt", "--from", m0, "--stack", name, "--ssh-key",
                  str(lab_env.key_path), "--kubeconfig", str(lab_env.kubeconfig), *extra)
    assert adopted.returncode == 0, adopted.stderr
    for secret in (sealer.password, sealer.ssh_password, sealer.key.splitlines()[1]):
        assert secret not in adopted.stdout + adopted.stderr
    doc = yaml.safe_load((REPO / f"Pulumi.{name}.yaml").read_text())["config"]
    registry = doc["sealer-registry:registry"]
    assert registry["tls"]["cert"] == sealer.cert
    if sealer.registry_config is not None:
        assert registry["config"] == sealer.registry_config
    ssh = doc["sealer-registry:cluster"]["ssh"]
    logins = [ssh[k] for k in ("private_key", "password") if k in ssh]
    assert logins
    secrets = [registry["password"], registry["tls"]["key"], *logins]
    if sealer.htpasswd is not None:
        secrets.append(registry["htpasswd"])
    for secret in secrets:
        assert set(secret) == {"secure"}
    refused = cli(engine, "adopt", "--from", m0, "--stack", name)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    assert cli(engine, "validate", "--stack", name).returncode == 0

    stack = ProgramStack(name, engine)
    first = stack.up()
    assert "registry-verify" in first.remote_commands()
    for ip, pid in pids.items():
        assert registry_pids(lab, ip, sealer.port) == pid, f"{ip}: sealer's registry was restarted"
    for ip in sealer.hosts:
        after = trust_files(lab, ip, sealer.domain, sealer.port)
        assert {f: after.get(f) for f in before[ip]} == before[ip], f"{ip}: a trust file changed"
        for added in set(after) - set(before[ip]):
            if added.endswith(".crt"):
                assert lab.run(ip, f"cat {added}").stdout == sealer.cert, added
        assert lab.run(ip, "cat /etc/hosts").stdout == hosts_before[ip], ip
    if len(sealer.registry_hosts) == 1:
        # sealer's data stays in place on master0 (stamped "self"); every other master pulled it
        # host to host (logged in as the stack does: key or password, sudo for a non-root user).
        source = stamp(lab, sealer, m0)
        assert source is not None and source["source"] == "self" and source["files"] > 0
        for ip in sealer.masters[1:]:
            got = stamp(lab, sealer, ip)
            assert got is not None and (got["source"], got["tree"]) == (m0, source["tree"]), (ip, got)
    assert stack.up().changed() == {}
    for ip, pid in pids.items():
        assert registry_pids(lab, ip, sealer.port) == pid, ip
    return doc
