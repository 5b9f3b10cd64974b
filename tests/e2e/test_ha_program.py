"""The program in sealer's HA layout (registry.local_registry.ha), real engine and lab hosts: hosts
prepared with sealer's HA lines (a master maps the domain to itself, a node to the VIP: the lab
has no IPVS, so master0 stands in for the VIP here) and sealer's trust file `<domain>.crt`. The
`up` runs a read-write registry on every master, writes no hosts line, adds no CA file where
sealer's holds it, verifies every master's registry; a second `up` changes nothing.

The lab flavour that imitates sealer's VIP and lvscare (issue 19, part 1) is the lab's; this test
covers what the program does on any hosts laid out that way."""

from __future__ import annotations

import pytest

from lab.stack import DOMAIN, PASSWORD, PORT, ProgramStack, registry_running, stack_values
from tests.e2e.labstack import lab_env  # noqa: F401  (module-scoped lab of 3 masters + 2 nodes)

CERTS_DIRS = (f"/etc/docker/certs.d/{DOMAIN}:{PORT}", f"/etc/containerd/certs.d/{DOMAIN}:{PORT}")


@pytest.fixture(scope="module")
def stack(lab_env, toolchain_env):  # noqa: F811
    stack = ProgramStack("e2e-ha", toolchain_env)
    yield stack
    stack.remove()


def sealer_ha_hosts(env) -> None:
    """Every host as sealer's HA install leaves it: its hosts line, and the CA as <domain>.crt."""
    m0 = env.masters[0]
    for ip in env.all_ips:
        target = ip if ip in env.masters else m0
        env.lab.run(ip, f"sed -i '/ {DOMAIN}\\b/d' /etc/hosts && "
                        f"echo '{target} {DOMAIN} #hostalias-set-by-sealer' >> /etc/hosts")
        for d in CERTS_DIRS:
            env.lab.run(ip, f"rm -rf {d} && mkdir -p {d} && cat > {d}/{DOMAIN}.crt", input=env.ca[0])


def host_state(env, ip: str) -> str:
    return env.lab.run(ip, "md5sum /etc/hosts; stat -c '%i' /etc/hosts; " + "; ".join(
        f"for f in {d}/*.crt; do md5sum \"$f\"; stat -c '%i %Y' \"$f\"; done" for d in CERTS_DIRS)).stdout


def test_ha_up_keeps_sealer_s_lines_and_trust_and_runs_every_master(lab_env, stack):  # noqa: F811
    env = lab_env
    sealer_ha_hosts(env)
    before = {ip: host_state(env, ip) for ip in env.all_ips}
    values = stack_values(env, master0=env.masters[0])
    values["registry"]["local_registry"] = {"ha": True, "insecure_mode": False}
    values["apps"] = {"history_file": values["apps"]["history_file"]}
    # No image store in HA (refused): the registry password and the CA key only.
    stack.configure(values, {"registry.password": PASSWORD, "registry.tls.ca_key": env.ca[1]})
    report = stack.up()
    for ip in env.masters:
        assert registry_running(env.lab, ip), ip
        assert f"registry-launch-{ip}" in report.steps and f"data-{ip}" in report.steps
        assert f"registry-standby-{ip}" not in report.steps
    assert "registry-verify" in report.remote_commands()
    for ip in env.all_ips:
        assert host_state(env, ip) == before[ip], ip
        for d in CERTS_DIRS:
            assert env.lab.run(ip, f"test -e {d}/ca.crt", check=False).returncode == 1, (ip, d)
    again = stack.up()
    assert again.changed() == {}, again.changed()
