"""Adopting a cluster as sealer left it (issue 12, part 3), as an operator does it: `python -m
cli adopt --from <master0>`, `python -m cli validate`, then `pulumi up`. The first `up` changes
no node's trust (every trust file sealer wrote keeps its bytes, inode and mtime; any file added
holds the same certificate) and keeps sealer's registry (same pid); the second `up` does nothing.
Real engine, real lab hosts, real kube-apiserver."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from lab.hosts import REPO
from lab.sealer_state import CERTS_DIRS, make_sealer_state
from lab.stack import ProgramStack
from tests.e2e.labstack import engine_env, lab_env  # noqa: F401  (module-scoped lab)

pytestmark = pytest.mark.e2e

STACK = "e2e-adopt"
OPS_STACK = "e2e-adopt-ops"
PASSWORD_STACK = "e2e-adopt-password"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env=dict(env, PYTHONPATH=str(REPO)))
    print(f"$ python -m cli {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def trust_files(lab, ip: str, domain: str, port: int) -> dict[str, str]:
    """Every file under the host's certs.d directories of the registry: `sha256 inode mtime`."""
    dirs = " ".join(f"{d}/{domain}:{port}" for d in CERTS_DIRS.values())
    out = lab.run(ip, f"find {dirs} -type f 2>/dev/null | sort | while read -r f; do "
                      "printf '%s %s %s\\n' \"$f\" \"$(sha256sum < \"$f\" | cut -c1-64)\" "
                      "\"$(stat -c '%i %Y' \"$f\")\"; done", check=False).stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}


def registry_pids(lab, ip: str) -> list[int]:
    out = lab.run(ip, "ss -Hltnp 'sport = :5000' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u",
                  check=False).stdout
    return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def sealer(lab_env):  # noqa: F811
    env = lab_env
    history = json.loads(env.history_file.read_text())
    ids = [env.cluster_image_id, *(a["image_id"] for a in history["applications"])]
    return make_sealer_state(env.lab, history=history, store=env.store, image_ids=ids)


def forget(env: dict[str, str], *stacks: str) -> None:
    for name in stacks:
        subprocess.run(["pulumi", "stack", "rm", "--yes", "--force", "--stack", name], cwd=REPO,
                       env=env, capture_output=True)
        (REPO / f"Pulumi.{name}.yaml").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def engine(toolchain_env):
    env = engine_env(toolchain_env)
    forget(env, STACK, OPS_STACK, PASSWORD_STACK)
    yield env
    forget(env, STACK, OPS_STACK, PASSWORD_STACK)


def test_adopt_validate_and_up_keep_sealers_trust_and_registry(lab_env, sealer, engine):  # noqa: F811
    adopt_and_up(lab_env, sealer, engine, STACK)


def test_the_adopted_stack_recovers_onto_a_replica_of_sealers_data(lab_env, sealer, engine):  # noqa: F811
    """No image store: the first `up` replicated sealer's registry tree host to host to the other
    masters (pre mode). With master0 dead, `recover` accepts a master holding a complete replica,
    moves the registry there without one packet to the dead master0, and sealer's images are
    served from it with sealer's login."""
    lab = lab_env.lab
    m0, new = sealer.master0, sealer.masters[1]
    lab.kill(m0)
    try:
        before = lab.packets_to(m0)
        done = cli(engine, "recover", "master0", "--host", new, "--stack", STACK, "--yes",
                   "--ssh-key", str(lab_env.key_path))
        assert done.returncode == 0, done.stderr
        assert f"data from {new}'s own replica" in done.stdout
        assert lab.packets_to(m0) == before
        assert stamp(lab, sealer, new)["source"] == "self"
        assert stamp(lab, sealer, sealer.masters[2])["source"] == new
        for ref in lab_env.refs:
            assert manifest_digest(lab, sealer.nodes[0], sealer, ref) == ref.split("@")[1], ref
    finally:
        lab.revive(m0)


def stamp(lab, sealer, ip: str) -> dict | None:
    done = lab.run(ip, f"cat {sealer.rootfs}/registry/.sealer-replica", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def test_a_cluster_reached_as_a_non_root_user_with_sudo(lab_env, engine):  # noqa: F811
    """sealer reaches the hosts as `ops` with passwordless sudo: adopt reads master0 as ops
    (sudo -n), the stack's user is ops, every step runs through sudo; the same guarantees hold."""
    env = lab_env
    history = json.loads(env.history_file.read_text())
    ids = [env.cluster_image_id, *(a["image_id"] for a in history["applications"])]
    sealer = make_sealer_state(env.lab, history=history, store=env.store, image_ids=ids,
                               ssh_user="ops")
    doc = adopt_and_up(lab_env, sealer, engine, OPS_STACK, "--user", "ops")
    assert doc["sealer-registry:cluster"]["ssh"]["user"] == "ops"


def test_a_cluster_reached_by_password(lab_env, engine):  # noqa: F811
    """sealer reaches the hosts as `ops` by an `encrypted: true` passwd, no pk: the stack has no
    key, only cluster.ssh.password (a secret); the engine logs in with it."""
    env = lab_env
    history = json.loads(env.history_file.read_text())
    ids = [env.cluster_image_id, *(a["image_id"] for a in history["applications"])]
    sealer = make_sealer_state(env.lab, history=history, store=env.store, image_ids=ids,
                               ssh_user="ops", ssh_password="ops-Passw0rd")
    doc = adopt_and_up(lab_env, sealer, engine, PASSWORD_STACK, "--user", "ops")
    ssh = doc["sealer-registry:cluster"]["ssh"]
    assert set(ssh["password"]) == {"secure"}
    assert "private_key" not in ssh and "private_key_path" not in ssh
    for ip in sealer.hosts:  # the engine's steps logged in with the password
        log = env.lab.run(ip, "cat /var/log/sshd.log").stdout
        assert "Accepted password for ops" in log, ip


def adopt_and_up(lab_env, sealer, engine, name: str, *extra: str) -> dict:  # noqa: F811
    lab = lab_env.lab
    m0 = sealer.master0
    before = {ip: trust_files(lab, ip, sealer.domain, sealer.port) for ip in sealer.hosts}
    hosts_before = {ip: lab.run(ip, "cat /etc/hosts").stdout for ip in sealer.hosts}
    pids = registry_pids(lab, m0)
    assert len(pids) == 1

    adopted = cli(engine, "adopt", "--from", m0, "--stack", name, "--ssh-key",
                  str(lab_env.key_path), "--kubeconfig", str(lab_env.kubeconfig), *extra)
    assert adopted.returncode == 0, adopted.stderr
    doc = yaml.safe_load((REPO / f"Pulumi.{name}.yaml").read_text())["config"]
    registry = doc["sealer-registry:registry"]
    assert registry["tls"]["cert"] == sealer.cert
    assert registry["config"] == sealer.registry_config
    ssh = doc["sealer-registry:cluster"]["ssh"]
    logins = [ssh[k] for k in ("private_key", "password") if k in ssh]
    assert logins
    for secret in (registry["password"], registry["htpasswd"], registry["tls"]["key"], *logins):
        assert set(secret) == {"secure"}
    refused = cli(engine, "adopt", "--from", m0, "--stack", name)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    assert cli(engine, "validate", "--stack", name).returncode == 0

    stack = ProgramStack(name, engine)
    first = stack.up()
    assert "registry-verify" in first.remote_commands()
    assert registry_pids(lab, m0) == pids, "sealer's registry was restarted"
    for ip in sealer.hosts:
        after = trust_files(lab, ip, sealer.domain, sealer.port)
        assert {f: after.get(f) for f in before[ip]} == before[ip], f"{ip}: a trust file changed"
        for added in set(after) - set(before[ip]):
            if added.endswith(".crt"):
                assert lab.run(ip, f"cat {added}").stdout == sealer.cert, added
        assert lab.run(ip, "cat /etc/hosts").stdout == hosts_before[ip], ip
    # sealer's data stays in place on master0 (stamped "self"); every other master pulled it host
    # to host (logged in as the stack does: key or password, sudo for a non-root user).
    source = stamp(lab, sealer, m0)
    assert source is not None and source["source"] == "self" and source["files"] > 0
    for ip in sealer.masters[1:]:
        got = stamp(lab, sealer, ip)
        assert got is not None and (got["source"], got["tree"]) == (m0, source["tree"]), (ip, got)
    node = sealer.nodes[0]
    for ref in lab_env.refs:  # sealer's data, served through the domain with sealer's login
        assert manifest_digest(lab, node, sealer, ref) == ref.split("@")[1], ref
    assert stack.up().changed() == {}
    assert registry_pids(lab, m0) == pids
    return doc


def manifest_digest(lab, ip: str, sealer, ref: str) -> str:
    repo_tag, _ = ref.split("@")
    repo, tag = repo_tag.rsplit(":", 1)
    out = lab.run(ip, f"curl -sS --max-time 10 --cacert {sealer.trust_files[ip]} -K - -I "
                      "-H 'Accept: application/vnd.oci.image.manifest.v1+json' "
                      f"https://{sealer.domain}:{sealer.port}/v2/{repo}/manifests/{tag}",
                  input=f'user = "{sealer.username}:{sealer.password}"\n').stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.lower().startswith("docker-content-digest:")), "")
