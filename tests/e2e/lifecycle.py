"""Deploy, recover and rejoin on real hosts with the real engine (issue 5): the shared steps.

`test_lifecycle_pre.py` and `test_lifecycle_post.py` run them with a fresh lab of 3 masters + 2
nodes each; the tests of a class run in order and each states the invariant it proves. master0 is killed the way a dead machine is (packets dropped), and
the packet counter on its link proves that recovery never dials it.
"""

from __future__ import annotations

import base64
import json
import shlex

import pytest

from lab.pull import containerd_pull
from lab.stack import (DOMAIN, PASSWORD, PORT, SECRETS, ProgramStack, hosts_line, registry_running,
                       stack_values)
from tests.e2e.kube import Kube


def replica_stamp(lab_env, ip) -> dict | None:
    """The host's replica stamp (scripts/lib/replica.sh), None when it has none."""
    done = lab_env.lab.run(ip, f"cat {lab_env.rootfs}/registry/.sealer-replica", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def pull_image(lab, node_ip, ref) -> str:
    """The digest ``ref``'s tag resolves to in a real containerd pull on ``node_ip`` (manifest,
    config and every layer digest-verified) through its own /etc/hosts and
    /etc/containerd/certs.d, credentials off the command line (lab/pull.py); "" when it fails."""
    pulled = containerd_pull(lab, node_ip, ref.split("@")[0], "admin", PASSWORD, DOMAIN, PORT)
    assert pulled.ok, pulled.stderr
    return pulled.digest


class Lifecycle:
    """Shared steps of the pre and post lifecycles."""

    mode = "pre"

    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, lab_env, toolchain_env):
        stack = ProgramStack(f"e2e-{cls.mode}", toolchain_env)
        m0 = lab_env.masters[0]
        stack.configure(stack_values(lab_env, master0=m0, distribution=cls.mode),
                        {**SECRETS, "registry.tls.ca_key": lab_env.ca[1]})
        yield stack
        stack.remove()

    def test_deploy(self, lab_env, stack):
        """A fresh `up` launches the registry on master0, points every host at it, installs the
        CA and the rootfs files with safe modes, and its own verification passes."""
        report = stack.up()
        m0 = lab_env.masters[0]
        for host in lab_env.all_ips:
            assert hosts_line(lab_env.lab, host) == [f"{m0} {DOMAIN} #hostalias-set-by-sealer"]
            ca = lab_env.lab.run(host, f"cat /etc/containerd/certs.d/{DOMAIN}:{PORT}/ca.crt").stdout
            assert ca == lab_env.ca[0]
        rootfs = lab_env.rootfs
        modes = lab_env.lab.run(m0, f"stat -c '%a %n' {rootfs}/certs/{DOMAIN}.key {rootfs}/etc/registry_htpasswd {rootfs}/etc/registry_config.yml").stdout.split("\n")
        assert modes[0].startswith("600 ") and modes[1].startswith("600 ") and modes[2].startswith("644 ")
        assert registry_running(lab_env.lab, m0)
        assert not registry_running(lab_env.lab, lab_env.masters[1])
        holders = lab_env.masters if self.mode == "pre" else [m0]
        for ip in lab_env.masters:
            blobs = lab_env.lab.run(ip, f"find {rootfs}/registry -path '*/blobs/*' -name data 2>/dev/null | wc -l").stdout.strip()
            assert (int(blobs) > 0) == (ip in holders), (ip, blobs)
        for ref in lab_env.refs:
            assert pull_image(lab_env.lab, lab_env.nodes[0], ref) == ref.split("@")[1]
        assert "registry-verify" in report.remote_commands()
        # master0 is the source ("self"); in pre mode every other deploy host copied its tree
        # host to host (the step ran on the replica) and stamped it with master0's tree digest.
        source = replica_stamp(lab_env, m0)
        assert source is not None and source["source"] == "self" and source["files"] > 0
        for ip in lab_env.masters[1:]:
            got = replica_stamp(lab_env, ip)
            if self.mode == "pre":
                assert got is not None and got["source"] == m0, (ip, got)
                assert (got["tree"], got["files"], got["bytes"]) == (
                    source["tree"], source["files"], source["bytes"])
                assert report.types.get(f"data-{ip}") == "command:remote:Command"
            else:
                assert got is None and f"data-{ip}" not in report.steps

    def test_records_in_cluster(self, lab_env, stack):
        """ConfigMaps and Secret exist in kube-system with the right keys; no secret in plaintext
        in the ConfigMaps or in `pulumi stack export`."""
        kube = Kube(lab_env.kubeconfig)
        cm = kube.configmap("sealer-registry")
        assert {"registry", "registry_config.yml", "ca.crt", "tls.crt"} <= set(cm["data"])
        assert "registry.yml" not in cm["data"]
        assert f"master0: {lab_env.masters[0]}" in cm["data"]["registry"]
        secret = kube.secret("sealer-registry")
        assert set(secret["data"]) == {"tls.key", "htpasswd"}
        apps = kube.configmap("sealer-apps")
        assert json.loads(apps["data"]["application.json"]) == json.loads(lab_env.history_file.read_text())
        exported = stack.export()
        htpasswd_hash = base64.b64decode(secret["data"]["htpasswd"]).decode().split(":", 1)[1].strip()
        for plaintext in (PASSWORD, lab_env.ca[1].splitlines()[1], htpasswd_hash,
                          lab_env.key_path.read_text().splitlines()[1]):
            assert plaintext not in exported
            assert plaintext not in json.dumps(cm)

    def test_second_up_changes_nothing(self, stack):
        """A second `up` with unchanged config has no changes and runs no command."""
        report = stack.up()
        assert report.changed() == {}
        assert report.remote_commands() == []

    def test_recovery_preview_plans_the_move_and_spares_the_dead_master0(self, lab_env, stack):
        """With master0 dead, the preview after `master0` moves lists the launch on the new host,
        every live host's hosts entry, (post) the data copy, and nothing on the old master0."""
        old, new = lab_env.masters[0], lab_env.masters[1]
        lab_env.lab.kill(old)
        before = lab_env.lab.packets_to(old)
        stack.set("master0", new)
        stack.set("down_hosts", [old])
        report = stack.preview()
        changed = report.changed()
        assert changed.get(f"registry-launch-{new}") == "create"
        for ip in lab_env.all_ips:
            if ip != old:
                assert changed.get(f"node-{ip}") == "update", ip
        if self.mode == "post":
            assert changed.get(f"data-{new}") == "create"
        else:
            # The replica's pull (remote) becomes master0's store push (local): the type is part
            # of the URN, so the engine creates the new step and deletes the old one, whose
            # delete runs nothing (none declared). The other replica pulls from the new master0.
            assert changed.get(f"data-{new}") in ("create", "delete")
            assert changed.get(f"data-{lab_env.masters[2]}") == "update"
        touching_old = [n for n, op in changed.items() if n.endswith(old) and op != "delete"]
        assert touching_old == []
        assert lab_env.lab.packets_to(old) == before

    def test_recovery_up_moves_the_registry_without_dialling_the_dead_master0(self, lab_env, stack):
        """`up` recovers: the registry runs on the new master0, every live host points at it, the
        verification passes, and not one packet went to the dead master0."""
        old, new = lab_env.masters[0], lab_env.masters[1]
        before = lab_env.lab.packets_to(old)
        report = stack.up()
        assert lab_env.lab.packets_to(old) == before
        assert registry_running(lab_env.lab, new)
        for ip in lab_env.all_ips:
            if ip != old:
                assert hosts_line(lab_env.lab, ip) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
        for ref in lab_env.refs:
            assert pull_image(lab_env.lab, lab_env.nodes[0], ref) == ref.split("@")[1]
        assert replica_stamp(lab_env, new)["source"] == "self"
        if self.mode == "pre":
            assert replica_stamp(lab_env, lab_env.masters[2])["source"] == new
        # The kubeconfig names the dead master0's apiserver: the records went through a live
        # master's (the etcd quorum of the other two holds them).
        assert f"https://{old}:6443" in lab_env.kubeconfig.read_text()
        kube = Kube(lab_env.kubeconfig, server=f"https://{lab_env.masters[2]}:6443")
        assert f"master0: {new}" in kube.configmap("sealer-registry")["data"]["registry"]
        print(f"\nrecovery up ({self.mode}): {report.seconds:.1f}s, "
              f"{len(report.remote_commands())} commands: {sorted(report.remote_commands())}")
        assert stack.up().changed() == {}

    def test_old_master0_rejoins_without_split_brain(self, lab_env, stack):
        """The revived old master0, taken off down_hosts, points at the new master0 and serves no
        registry of its own; nodes stay on the new master0."""
        old, new = lab_env.masters[0], lab_env.masters[1]
        lab_env.lab.revive(old)
        assert registry_running(lab_env.lab, old)  # its stale registry survived the outage
        stack.set("down_hosts", [])
        stack.up()
        assert not registry_running(lab_env.lab, old)
        for ip in lab_env.all_ips:
            assert hosts_line(lab_env.lab, ip) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
        if self.mode == "pre":  # its data step pulled from the new master0 (no --delete: its own stays)
            assert replica_stamp(lab_env, old)["source"] == new
        assert stack.up().changed() == {}



PULL_SCRIPT = r"""
set -euo pipefail
repo=$1 tag=$2 want=$3 ca=$4 base=$5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/auth"
get() { curl -sS --fail --max-time 60 -L --cacert "$ca" -K "$work/auth" "$@"; }
get -o "$work/manifest" -H 'Accept: application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json' "$base/v2/$repo/manifests/$tag"
got="sha256:$(sha256sum <"$work/manifest" | cut -d' ' -f1)"
[[ "$got" == "$want" ]] || { echo "manifest $got != $want"; exit 1; }
n=0
for d in $(grep -o '"digest": *"sha256:[0-9a-f]*"' "$work/manifest" | grep -o 'sha256:[0-9a-f]*'); do
  get -o "$work/blob" "$base/v2/$repo/blobs/$d"
  got="sha256:$(sha256sum <"$work/blob" | cut -d' ' -f1)"
  [[ "$got" == "$d" ]] || { echo "blob $got != $d"; exit 1; }
  n=$((n + 1))
done
echo "$n"
"""


def fetch_every_blob(lab, node_ip, ref) -> int:
    """Pulls ``ref`` from ``node_ip`` through its own /etc/hosts and CA the way a runtime does:
    the manifest by tag, which must hash to the ref's digest, then every blob it names (config and
    layers), each hashed against its digest. Returns how many blobs were verified; raises if any
    digest differs or a fetch fails."""
    repo_tag, digest = ref.split("@")
    repo, tag = repo_tag.rsplit(":", 1)
    ca = f"/etc/docker/certs.d/{DOMAIN}:{PORT}/ca.crt"
    done = lab.run(node_ip, "bash -c " + shlex.quote(PULL_SCRIPT) + " pull " + " ".join(
        shlex.quote(a) for a in (repo, tag, digest, ca, f"https://{DOMAIN}:{PORT}")),
        input=f'user = "admin:{PASSWORD}"\n', check=False, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"pull of {ref} from {node_ip} failed: {done.stdout}{done.stderr}")
    return int(done.stdout.strip())
