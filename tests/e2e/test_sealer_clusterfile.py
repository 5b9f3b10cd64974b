"""After a recovery, sealer's own Clusterfile names the new master0 first (issue 20, part 2), on
the lab's v0.11 `ha: false` flavour as sealer's source leaves it (lab/sealer_state.py): adopt,
first `up`, kill master0, `recover` onto another master. The ConfigMap kube-system/sealer-clusterfile
(what sealer reads first) and the live hosts' ~/.sealer/Clusterfile are then the texts before with
only the master IPs traded (compared byte for byte); a file already naming the new master0 first
keeps its bytes and mtime; the dead master0 gets no packet; a second `recover` changes nothing.
Real engine, lab hosts, kube-apiserver."""

from __future__ import annotations

import json
import os

import pytest

from lab import controlplane
from tests.e2e.labstack import engine_env, lab_env  # noqa: F401  (module-scoped lab)
from tests.e2e.test_adopt import adopt_and_up, cli, forget, make

pytestmark = pytest.mark.e2e

STACK = "e2e-sealer-clusterfile"
PATH = "/root/.sealer/Clusterfile"


@pytest.fixture(scope="module")
def engine(toolchain_env):
    env = engine_env(toolchain_env)
    forget(env, STACK)
    yield env
    forget(env, STACK)


@pytest.fixture(scope="module")
def cp(lab_env):  # noqa: F811
    return controlplane.up(lab_env.lab)


def configmap(cp, server_ip: str) -> tuple[str, str]:
    """(Clusterfile text, resourceVersion) of sealer-clusterfile, asked of ``server_ip``'s
    apiserver (master0's is dead)."""
    status, body = controlplane.request(
        cp, "GET", "/api/v1/namespaces/kube-system/configmaps/sealer-clusterfile",
        server=controlplane.server_of(server_ip))
    assert status == 200, body
    obj = json.loads(body)
    return obj["data"]["Clusterfile"], obj["metadata"]["resourceVersion"]


def file_state(lab, ip: str) -> tuple[str, float, int]:
    path = lab.host_path(ip, PATH)
    st = path.stat()
    return path.read_text(), st.st_mtime, st.st_mode


def master0_traded(text: str, old: str, new: str) -> str:
    """The text with only the shared masters entry's two IP lines traded (sealer v0.11 writes one
    hosts entry with every master: lab/sealer_files.py cluster_document)."""
    before = f"    - {old}\n    - {new}\n"
    assert text.count(before) == 1, text
    return text.replace(before, f"    - {new}\n    - {old}\n")


def test_recover_makes_sealers_clusterfile_name_the_new_master0_first(lab_env, cp, engine):  # noqa: F811
    lab = lab_env.lab
    sealer = make(lab_env, cp, "v0.11")
    assert sealer.clusterfile_path == PATH and sealer.clusterfile_configmap is not None
    adopt_and_up(lab_env, sealer, engine, STACK)
    m0, new, third = sealer.masters[0], sealer.masters[1], sealer.masters[2]
    # sealer was run on the third master too (its file as master0 left it), and the new master0
    # already holds a file naming itself first: that one must not be written at all.
    cm_before = sealer.clusterfile_configmap
    third_before = sealer.clusterfile
    new_before = master0_traded(sealer.clusterfile, m0, new)
    for ip, text in ((third, third_before), (new, new_before)):
        target = lab.host_path(ip, PATH)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o640)
        os.utime(target, (1_600_000_000, 1_600_000_000))
    m0_file = lab.host_path(m0, PATH).read_bytes()

    lab.kill(m0)
    try:
        packets = lab.packets_to(m0)
        done = cli(engine, "recover", "master0", "--host", new, "--stack", STACK, "--yes",
                   "--ssh-key", str(lab_env.key_path), "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        states = {o["where"]: o["state"] for o in doc["sealer_clusterfile"]}
        assert states == {"ConfigMap kube-system/sealer-clusterfile": "updated",
                          f"{new}:{PATH}": "unchanged", f"{third}:{PATH}": "updated"}, states
        assert lab.packets_to(m0) == packets

        cm_after, version = configmap(cp, new)
        assert cm_after == master0_traded(cm_before, m0, new)
        third_after = file_state(lab, third)
        assert third_after[0] == master0_traded(third_before, m0, new)
        assert third_after[2] & 0o777 == 0o640
        assert file_state(lab, new)[:2] == (new_before, 1_600_000_000)
        for ip in sealer.nodes:
            assert not lab.host_path(ip, PATH).exists()

        again = cli(engine, "recover", "master0", "--host", new, "--stack", STACK, "--yes",
                    "--ssh-key", str(lab_env.key_path), "--json")
        assert again.returncode == 0, again.stderr
        second = json.loads(again.stdout)
        assert second["resumed"] is True
        assert {o["state"] for o in second["sealer_clusterfile"]} == {"unchanged"}
        assert configmap(cp, new) == (cm_after, version)
        assert file_state(lab, third) == third_after
        assert file_state(lab, new)[:2] == (new_before, 1_600_000_000)
        assert lab.packets_to(m0) == packets
    finally:
        lab.revive(m0)
    assert lab.host_path(m0, PATH).read_bytes() == m0_file  # never dialled, never written
