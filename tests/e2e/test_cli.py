"""The operator CLI as a user drives it: `python -m cli ...` subprocesses against a real lab, the
real engine (toolchain) and a real kube-apiserver. The tests of the class run in order: init-pki,
deploy, status, every preflight refusal, master0 dies, a preview that changes nothing, the
recovery, and the rejoin of the old master0.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from lab import store as lab_store
from lab.stack import DOMAIN, PASSWORD, PORT
from tests.e2e.labstack import CliStack, cli_stack_values, engine_env, lab_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


def registry_answers(lab, ip) -> bool:
    code = lab.run(ip, f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 3 "
                       f"https://127.0.0.1:{PORT}/v2/", check=False).stdout.strip()
    return code in ("200", "401")


def domain_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(rf"\s{re.escape(DOMAIN)}(\s|$)", line)]


def refused(result, fragment: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


class TestOperatorCli:
    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, lab_env, toolchain_env):  # noqa: F811
        stack = CliStack("e2e-cli", engine_env(toolchain_env))
        masters = lab_env.masters
        stack.configure(cli_stack_values(lab_env, master0=masters[0], deploy_hosts=masters[:2]),
                        {"registry.password": PASSWORD, **lab_store.SECRETS})
        yield stack
        stack.remove()

    def test_init_pki_stores_the_ca_once(self, stack):
        """init-pki puts the CA in the config (cert plain, key a secret) and then refuses to
        replace it; the stack is valid afterwards."""
        result = stack.cli("init-pki")
        assert result.returncode == 0, result.stderr
        tls = stack.config()["registry"]["tls"]
        assert tls["ca_cert"].startswith("-----BEGIN CERTIFICATE-----")
        assert set(tls["ca_key"]) == {"secure"}
        refused(stack.cli("init-pki"), "already has registry.tls.ca_cert")
        assert stack.config()["registry"]["tls"] == tls
        assert stack.cli("validate").returncode == 0

    def test_deploy_then_status_is_healthy(self, stack, lab_env):  # noqa: F811
        """After `pulumi up`, status exits 0 with every host reachable and pointing at master0."""
        stack.pulumi("up", "--yes", "--skip-preview")
        result = stack.cli("status")
        assert result.returncode == 0, result.stdout
        m0 = lab_env.masters[0]
        rows = [line.split() for line in result.stdout.splitlines()[1:len(lab_env.all_ips) + 1]]
        assert [r[0] for r in rows] == lab_env.all_ips
        # The last five columns: SEA.HUB ->, CA, CONTAINERD, LACKS, ENTRY (REPLICA may hold a space).
        assert all(r[2] == "yes" and r[-5:-2] == [m0, "ok", "certs.d"] for r in rows), rows
        # LACKS: the replica is in sync with master0's live tree; nodes are not judged.
        assert [r[-2] for r in rows] == ["none", "none", "-", "-", "-"], rows
        # ENTRY: no node entry point is configured on this stack.
        assert [r[-1] for r in rows] == ["-"] * 5, rows
        assert rows[0][1:6] == ["master0", "yes", "launch", "running", "3/3"]
        assert result.stdout.splitlines()[-1].startswith(f"healthy: master0 {m0} serves 3/3 images")

    def test_status_json_of_the_selected_stack_reads_as_the_table(self, stack, lab_env):  # noqa: F811
        """With the stack selected (`pulumi stack select`), `status --json` needs no --stack and
        reports what the table does: healthy, every host reachable and pointing at master0."""
        stack.select()
        result = stack.cli("status", "--json", named=False)
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        m0 = lab_env.masters[0]
        assert doc["stack"].split("/")[-1] == stack.name
        assert (doc["healthy"], doc["master0"], doc["master0_images"], doc["problems"]) == (True, m0, 3, [])
        assert [h["ip"] for h in doc["hosts"]] == lab_env.all_ips
        assert all(h["reachable"] and h["resolves"] == m0 and h["ca"] == "ok" for h in doc["hosts"])
        assert [(h["deploy"], h["images"]) for h in doc["hosts"][:3]] == [
            ("launch", 3), ("standby", 3), ("none", None)]
        assert [h["registry"] for h in doc["hosts"][:2]] == ["running", "stopped"]

    def test_recover_refuses_a_host_outside_the_cluster(self, stack):
        refused(stack.cli("recover", "master0", "--host", "198.18.0.99", "--yes"),
                "198.18.0.99 is not a host of cluster")

    def test_recover_refuses_a_node(self, stack, lab_env):  # noqa: F811
        refused(stack.cli("recover", "master0", "--host", lab_env.nodes[0], "--yes"),
                "is a node, not a master")

    def test_recover_refuses_a_master_that_is_not_a_deploy_host(self, stack, lab_env):  # noqa: F811
        refused(stack.cli("recover", "master0", "--host", lab_env.masters[2], "--yes"),
                "is not a deploy host")

    def test_recover_refuses_an_unreachable_master_and_changes_nothing(self, stack, lab_env):  # noqa: F811
        target = lab_env.masters[1]
        before = stack.stack_file.read_bytes()
        lab_env.lab.stop_sshd(target)
        try:
            start = time.monotonic()
            result = stack.cli("recover", "master0", "--host", target, "--yes")
            took = time.monotonic() - start
        finally:
            lab_env.lab.start_sshd(target)
        refused(result, f"cannot reach {target} over SSH: Connection refused")
        assert stack.stack_file.read_bytes() == before
        assert took < 20

    def test_recover_refuses_an_incomplete_replica_in_pre_mode(self, stack, lab_env):  # noqa: F811
        """In pre mode the new master0 must already hold every image: a replica missing one
        image's tag is refused, naming it, and nothing changes."""
        target = lab_env.masters[1]
        repo_tag = lab_env.refs[-1].split("@")[0]
        repo, tag = repo_tag.rsplit(":", 1)
        link = f"{lab_env.rootfs}/registry/docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}"
        before = stack.stack_file.read_bytes()
        lab_env.lab.run(target, f"mv {link} {link}.away")
        try:
            result = stack.cli("recover", "master0", "--host", target, "--yes")
        finally:
            lab_env.lab.run(target, f"mv {link}.away {link}")
        refused(result, f"{target}'s replica holds")
        assert repo_tag in result.stderr
        assert stack.stack_file.read_bytes() == before

    def test_status_after_master0_dies_is_degraded_and_bounded(self, stack, lab_env):  # noqa: F811
        """With master0 dead (packets dropped), status exits 1 within seconds and names it."""
        m0 = lab_env.masters[0]
        lab_env.lab.kill(m0)
        start = time.monotonic()
        result = stack.cli("status")
        assert time.monotonic() - start < 20
        assert result.returncode == 1, result.stdout
        assert f"problem: {m0} (master0) is unreachable: Connection timed out" in result.stdout

    def test_preview_changes_nothing(self, stack, lab_env):  # noqa: F811
        """--preview prints the plan and restores the config: stack file, state and every live
        host's /etc/hosts are identical before and after; the dead master0 got no packet."""
        old, new = lab_env.masters[0], lab_env.masters[1]
        live = [ip for ip in lab_env.all_ips if ip != old]
        file_before, state_before = stack.stack_file.read_bytes(), stack.export()
        hosts_before = {ip: lab_env.hosts_file(ip) for ip in live}
        packets = lab_env.lab.packets_to(old)
        result = stack.cli("recover", "master0", "--host", new, "--preview")
        assert result.returncode == 0, result.stderr
        assert f"  launch the registry on {new} [create]" in result.stdout
        assert f"point {DOMAIN} at {new} on {len(live)} hosts" in result.stdout
        assert "preview only: the stack config is restored" in result.stdout
        assert stack.stack_file.read_bytes() == file_before
        assert stack.export() == state_before
        assert {ip: lab_env.hosts_file(ip) for ip in live} == hosts_before
        assert lab_env.lab.packets_to(old) == packets

    def test_preview_json_is_one_object_and_changes_nothing(self, stack, lab_env):  # noqa: F811
        """`recover --preview --json`: the plan as one object on stdout, the progress on stderr,
        the stack file unchanged."""
        old, new = lab_env.masters[0], lab_env.masters[1]
        file_before = stack.stack_file.read_bytes()
        result = stack.cli("recover", "master0", "--host", new, "--preview", "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert (doc["outcome"], doc["old_master0"], doc["master0"], doc["down_hosts"]) == (
            "previewed", old, new, [old])
        assert doc["plan"]["launch_on"] == [new] and doc["verified"] is None
        assert "preview only: the stack config is restored" in result.stderr
        assert stack.stack_file.read_bytes() == file_before

    def test_recovery_moves_the_registry_and_status_is_healthy(self, stack, lab_env):  # noqa: F811
        """`recover --yes` runs up with live progress, verifies, and prints the summary; the
        registry answers on the new master0, every live host points at it, status exits 0, and
        the dead master0 got no packet. In pre mode the new master0's replica is complete, so the
        recovery needs nothing from the image store: it runs with the store registry stopped."""
        old, new = lab_env.masters[0], lab_env.masters[1]
        packets = lab_env.lab.packets_to(old)
        lab_store.stop(lab_env.lab)
        try:
            result = stack.cli("recover", "master0", "--host", new, "--yes")
        finally:
            lab_store.ensure(lab_env.lab, lab_env.store)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert f"data from {new}'s own replica" in out
        assert re.search(rf"start\s+create\s+registry-launch-{re.escape(new)}", out)
        assert re.search(rf"done\s+create\s+registry-launch-{re.escape(new)}", out)
        assert f"recovered: master0 {old} -> {new}" in out
        assert "  images verified:  3/3" in out
        assert re.search(r"  time: .*preflight .*preview .*up .*verify .*total [\d.]+s", out)
        assert lab_env.lab.packets_to(old) == packets
        assert registry_answers(lab_env.lab, new)
        for ip in lab_env.all_ips:
            if ip != old:
                assert domain_lines(lab_env.hosts_file(ip)) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
        config = stack.config()
        assert config["master0"] == new and config["down_hosts"] == [old]
        status = stack.cli("status")
        assert status.returncode == 0, status.stdout
        assert re.search(rf"^{re.escape(old)}\s+master\s+down \(listed\)", status.stdout, re.M)

    def test_rejoin_refuses_a_dead_host_then_brings_it_back(self, stack, lab_env):  # noqa: F811
        old, new = lab_env.masters[0], lab_env.masters[1]
        refused(stack.cli("rejoin", "--host", old, "--yes"), f"cannot reach {old} over SSH")
        lab_env.lab.revive(old)
        result = stack.cli("rejoin", "--host", old, "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
        assert not registry_answers(lab_env.lab, old)
        assert domain_lines(lab_env.hosts_file(old)) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
        status = stack.cli("status")
        assert status.returncode == 0, status.stdout
        assert stack.config().get("down_hosts") in ([], None)
