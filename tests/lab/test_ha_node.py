"""sealer's HA layout on a real lab node (registry.local_registry.ha): configure-node.sh
--keep-hosts leaves /etc/hosts alone and keeps sealer's trust file (`<domain>.crt`,
pkg/registry/local.go@v0.11.0:239-253) without adding ca.crt, while containerd still pulls through
it; the status probe counts sealer's file as the trust; verify-registry.sh checks each master's
registry by name at its address."""
from __future__ import annotations

import pytest

from cli.probe import parse_probe, pem_digest
from components.remote_scripts import script_run
from lab.pull import containerd_pull
from tests.lab.test_containerd_pull import configure_node, ref_text, served  # noqa: F401 (fixture)
from tests.lab.test_registry import (CLIENT, DOMAIN, PASSWORD, PORT, ROOTFS, SERVER_IP, SPARE_IP,
                                     USER)

DIRS = (f"/etc/docker/certs.d/{DOMAIN}:{PORT}", f"/etc/containerd/certs.d/{DOMAIN}:{PORT}")
# A node's line in sealer's HA layout: the domain maps to lvscare's VIP (the lab's stand-in maps
# it to the master, so that pulls work here too).
HOSTS_LINE = f"{SERVER_IP} {DOMAIN} #hostalias-set-by-sealer"


def snapshot(lab, host: str) -> str:
    """Bytes and inode of /etc/hosts and of every file in the two certs.d directories."""
    return lab.run(host, "stat -c '%i %s %n' /etc/hosts; md5sum /etc/hosts; "
                         + "; ".join(f"for f in {d}/*; do stat -c '%i %s %n' \"$f\"; md5sum \"$f\"; done"
                                     for d in DIRS)).stdout


@pytest.fixture
def sealer_trust(lab, served):  # noqa: F811 (the imported fixture)
    """CLIENT as sealer leaves a node: the CA as `<domain>.crt` only, sealer's hosts line."""
    ca = served["ca"].decode()
    for d in DIRS:
        lab.run(CLIENT, f"rm -rf {d} && mkdir -p {d} && cat > {d}/{DOMAIN}.crt", input=ca)
    lab.run(CLIENT, f"sed -i '/ {DOMAIN}\\b/d' /etc/hosts && echo '{HOSTS_LINE}' >> /etc/hosts")
    yield ca
    configure_node(lab, CLIENT, served["ca"])  # back to the program's layout for other tests


def configure_keep(lab, ca: str):
    run = script_run("configure-node.sh", "--keep-hosts", DOMAIN, "198.18.255.1", str(PORT), data=ca)
    return lab.ssh(CLIENT, run.command, input=run.stdin, check=False)


def test_keep_hosts_keeps_sealer_s_trust_and_hosts_and_containerd_pulls(lab, served, sealer_trust):
    """No ca.crt is added beside sealer's file, sealer's file keeps its bytes and inode, the hosts
    line stays (the MASTER0 argument, a bogus address here, is not written), and containerd pulls
    through the hosts.toml that names sealer's file; a second run changes nothing."""
    before = snapshot(lab, CLIENT)
    first = configure_keep(lab, sealer_trust)
    assert first.returncode == 0, first.stderr
    for d in DIRS:
        assert lab.run(CLIENT, f"test -e {d}/ca.crt", check=False).returncode == 1
        assert f"unchanged: {d}/{DOMAIN}.crt already holds the CA" in first.stderr
    hosts_toml = lab.run(CLIENT, f"cat {DIRS[1]}/hosts.toml").stdout
    assert f'ca = "{DIRS[1]}/{DOMAIN}.crt"' in hosts_toml
    after = snapshot(lab, CLIENT)
    kept = [line for line in before.splitlines()]
    assert all(line in after.splitlines() for line in kept), (before, after)
    assert "198.18.255.1" not in lab.run(CLIENT, "cat /etc/hosts").stdout
    assert lab.run(CLIENT, f"grep -c ' {DOMAIN}' /etc/hosts").stdout.strip() == "1"
    ref = served["refs"][0]
    pulled = containerd_pull(lab, CLIENT, f"{ref['repository']}:{ref['tag']}", USER, PASSWORD,
                             DOMAIN, PORT)
    assert pulled.ok and pulled.digest == ref["digest"], pulled.stderr
    again = configure_keep(lab, sealer_trust)
    assert again.returncode == 0 and "wrote:" not in again.stderr, again.stderr
    assert snapshot(lab, CLIENT) == after


def test_a_different_certificate_under_sealer_s_name_gets_ca_crt_beside_it(lab, served, sealer_trust):
    """'Only where missing or different': a directory whose *.crt holds another CA gets ca.crt."""
    from material import pki

    other = pki.generate_ca()[0]
    lab.run(CLIENT, f"cat > {DIRS[0]}/{DOMAIN}.crt", input=other)
    done = configure_keep(lab, sealer_trust)
    assert done.returncode == 0, done.stderr
    assert lab.run(CLIENT, f"cat {DIRS[0]}/ca.crt").stdout == sealer_trust
    assert lab.run(CLIENT, f"cat {DIRS[0]}/{DOMAIN}.crt").stdout == other  # not rewritten
    assert lab.run(CLIENT, f"test -e {DIRS[1]}/ca.crt", check=False).returncode == 1


def test_status_probe_counts_sealer_s_trust_file(lab, served, sealer_trust):
    run = script_run("status-probe.sh", ROOTFS, DOMAIN, str(PORT), pem_digest(sealer_trust))
    probe = parse_probe(CLIENT, lab.ssh(CLIENT, run.command, input=run.stdin).stdout)
    assert probe.ca == "ok"
    from material import pki

    run = script_run("status-probe.sh", ROOTFS, DOMAIN, str(PORT), pem_digest(pki.generate_ca()[0]))
    assert parse_probe(CLIENT, lab.ssh(CLIENT, run.command, input=run.stdin).stdout).ca == "differs"


def test_verify_checks_each_registry_by_name_and_fails_on_one_that_does_not_serve(lab, served):  # noqa: F811
    """HA verification: MASTER0 '-' accepts the domain resolving anywhere; each --registry must
    serve every ref over TLS verified by name; a master with no registry fails the step."""
    refs = [ref_text(r) for r in served["refs"]]
    run = script_run("verify-registry.sh", "--registry", SERVER_IP, DOMAIN, str(PORT), "https",
                     USER, "-", *refs, data=PASSWORD + "\n")
    done = lab.ssh(CLIENT, run.command, input=run.stdin, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (f"verified {len(refs)} on each of 1 registries "
                                            f"({SERVER_IP}), by name at each address")
    run = script_run("verify-registry.sh", "--registry", SERVER_IP, "--registry", SPARE_IP, DOMAIN,
                     str(PORT), "https", USER, "-", *refs, data=PASSWORD + "\n")
    bad = lab.ssh(CLIENT, run.command, input=run.stdin, check=False, timeout=300)
    assert bad.returncode != 0 and f"did not answer 200" in bad.stderr, bad.stderr
