"""`recover`'s data source for a stack without image store (adopted): the new master0's own
replica, else (post mode) the first other live deploy host holding one; refused when none."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cli import recover
from cli.common import CliError
from cli.probe import HostProbe
from config import build_config
from tests.unit.test_cli_status import CA_CERT, CA_KEY, M1, M2, M3, N1

STAMP = {"source": "self", "completed_at": 1, "files": 3, "bytes": 5000, "tree": "f" * 64}


def config(distribution: str):
    return build_config({
        "master0": M1, "distribution": distribution,
        "cluster": {"name": "lab", "masters": [M1, M2, M3], "nodes": [N1],
                    "ssh": {"private_key_path": "/nonexistent/id"}},
        "registry": {"local_registry": {"deploy_hosts": [M1, M3, M2]},
                     "tls": {"ca_cert": CA_CERT, "ca_key": CA_KEY}},
        "apps": {"history": {"type": "boot"}},
        "kubernetes": {"kubeconfig_path": "/nonexistent"},
    })


def run(monkeypatch, distribution, own=None, others=None):
    dialled = []

    def fake_probe_hosts(access, ips, command, timeout):
        dialled.extend(ips)
        return {ip: (others or {}).get(ip, HostProbe(ip, reachable=False, error="timed out")) for ip in ips}

    monkeypatch.setattr(recover, "probe_hosts", fake_probe_hosts)
    session = SimpleNamespace(config=config(distribution), ssh=lambda: None)
    probe = HostProbe(M2, reachable=True, replica=own, registry_bytes=1000)
    others = recover.other_live_deploy_hosts(session, M2, [M1])
    source, needed, _ip = recover.data_source(session, M2, probe, others)
    return (source, needed), dialled


def test_own_complete_replica_is_the_source_in_both_modes(monkeypatch):
    for mode in ("pre", "post"):
        assert run(monkeypatch, mode, own=STAMP) == ((f"{M2}'s own replica", 0), [M3])


def test_pre_mode_without_own_replica_is_refused(monkeypatch):
    with pytest.raises(CliError, match=f"{M2} holds no complete replica .* in pre mode"):
        run(monkeypatch, "pre")


def test_post_mode_takes_the_first_live_deploy_host_with_a_replica_never_the_old_master0(monkeypatch):
    (source, needed), dialled = run(monkeypatch, "post", others={
        M3: HostProbe(M3, reachable=True, replica=STAMP)})
    assert (source, needed) == (f"{M3}'s replica", 4000)
    assert dialled == [M3] and M1 not in dialled


def test_post_mode_without_any_source_is_refused_naming_what_was_tried(monkeypatch):
    with pytest.raises(CliError, match=rf"no source for the registry data: .*\(tried: {M3} \(unreachable\)\)"):
        run(monkeypatch, "post")
    with pytest.raises(CliError, match=rf"tried: {M3} \(no complete replica\)"):
        run(monkeypatch, "post", others={M3: HostProbe(M3, reachable=True)})
