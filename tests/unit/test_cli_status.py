"""cli/probe.py, cli/health.py and scripts/status-probe.sh: what a host reports and how the
status judges it."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from cli.health import assess, containerd_problem, render_table
from cli.probe import HostProbe, all_refs, ca_digest, parse_probe, pem_digest, probe_command
from cli.ssh import ssh_error
from config import build_config
from config.image_store import ImageRef, StoredImage
from material import pki

M1, M2, M3, N1 = "198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.21"
CA_CERT, CA_KEY = pki.generate_ca()
CLUSTER_IMG = "sha256:" + "cd" * 32
APP_IMG = "sha256:" + "ab" * 32
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
IMAGES = [
    StoredImage(CLUSTER_IMG, (ImageRef("sealer/cluster-base", "v1", D1), ImageRef("library/pause", "3.9", D2))),
    StoredImage(APP_IMG, (ImageRef("library/app0", "v1", D3),)),
]


def make_config(distribution: str = "pre", down_hosts=(), master0: str = M1, standby: str = "cold"):
    return build_config({
        "master0": master0, "down_hosts": list(down_hosts), "distribution": distribution,
        "cluster": {"name": "lab", "masters": [M1, M2, M3], "nodes": [N1],
                    "ssh": {"private_key_path": "/nonexistent/id"}},
        "registry": {"local_registry": {"deploy_hosts": [M1, M2], "standby": standby},
                     "tls": {"ca_cert": CA_CERT, "ca_key": CA_KEY}},
        "apps": {"history": {"type": "boot", "applications": [
            {"name": "app0", "image_id": APP_IMG, "type": "kube"}]},
            "image_store": {"registry": "store.example.com", "images": {
                img.image_id: [str(ref) for ref in img.refs] for img in IMAGES}},
            "cluster_image_id": CLUSTER_IMG},
        "kubernetes": {"kubeconfig_path": "/nonexistent"},
    })


COLUMNS = ("host", "role", "reachable", "deploy", "registry", "images", "replica", "resolves", "ca",
           "containerd")
STAMP = {"source": "self", "completed_at": 1000, "files": 12, "bytes": 3456, "tree": "e" * 64}


def cells(result) -> list[dict[str, str]]:
    """The status table's rows as {column: cell}."""
    return [dict(zip(COLUMNS, row)) for row in result.rows()]


def healthy_probe(ip: str, master0: str = M1, registry: str = "stopped", missing=()) -> HostProbe:
    return HostProbe(ip=ip, reachable=True, registry=registry, refs_ok=3 - len(missing),
                     missing_refs=list(missing), resolves=master0, ca="ok", containerd="certs.d",
                     replica=dict(STAMP, source="self" if ip == master0 else master0), clock=1180)


def healthy_probes(master0: str = M1) -> dict[str, HostProbe]:
    probes = {ip: healthy_probe(ip, master0) for ip in (M1, M2, M3, N1)}
    probes[master0].registry = "running"
    return probes


def test_healthy_cluster_has_no_problems_and_one_row_per_host():
    config = make_config()
    result = assess(config, IMAGES, healthy_probes())
    assert result.problems == []
    assert [r["host"] for r in cells(result)] == [M1, M2, M3, N1]
    assert [(r["role"], r["deploy"], r["registry"], r["images"]) for r in cells(result)] == [
        ("master0", "launch", "running", "2/2"), ("master", "standby", "stopped", "2/2"),
        ("master", "-", "-", "-"), ("node", "-", "-", "-")]
    assert result.master0_images == 2 and result.images_expected == 2


def test_dead_master0_is_degraded_and_named():
    """An unreachable master0 that is not listed down is a problem that says how to recover."""
    probes = healthy_probes()
    probes[M1] = HostProbe(ip=M1, reachable=False, error="Connection timed out")
    result = assess(make_config(), IMAGES, probes)
    assert result.problems[0].startswith(f"{M1} (master0) is unreachable: Connection timed out")
    assert "recover master0" in result.problems[0]
    assert cells(result)[0]["reachable"] == "no"


def test_listed_down_host_is_not_a_problem_and_shows_as_down():
    config = make_config(down_hosts=[M1], master0=M2)
    probes = healthy_probes(master0=M2)
    del probes[M1]
    result = assess(config, IMAGES, probes)
    assert result.problems == []
    assert cells(result)[0]["reachable"] == "down (listed)"


def test_incomplete_replica_in_pre_mode_is_a_problem_but_not_in_post_mode():
    """pre: every deploy host must hold every image; post: only master0."""
    probes = healthy_probes()
    probes[M2] = healthy_probe(M2, missing=[str(IMAGES[1].refs[0])])
    pre = assess(make_config("pre"), IMAGES, probes)
    assert pre.problems == [f"{M2} holds 1 of 2 images (missing e.g. library/app0:v1@{D3})"]
    assert cells(pre)[1]["images"] == "1/2"
    assert assess(make_config("post"), IMAGES, probes).problems == []


def test_second_registry_wrong_mapping_and_ca_are_problems():
    probes = healthy_probes()
    probes[M2].registry = "running"
    probes[N1].resolves = M2
    probes[M3].ca = "absent"
    problems = assess(make_config(), IMAGES, probes).problems
    assert any(p.startswith(f"{M2} runs a registry but is not master0") for p in problems)
    assert f"{N1}: sea.hub points to {M2}, not to master0 {M1}" in problems
    assert any(p.startswith(f"{M3}: CA trust absent") for p in problems)


@pytest.mark.parametrize("state", ["certs.d", "docker-certs.d", "elsewhere:/etc/other:/x", "no-cri", "-"])
def test_containerd_that_reads_certs_d_or_serves_no_cri_is_fine(state):
    """certs.d, docker-certs.d, elsewhere: configure-node.sh writes the CA and hosts.toml under the
    first entry of the config_path the CRI reads (the CA column checks it is there); no-cri / -:
    the kubelet does not pull through containerd."""
    probes = healthy_probes()
    probes[N1].containerd = state
    assert assess(make_config(), IMAGES, probes).problems == []
    assert containerd_problem(state, "sea.hub:5000") is None


@pytest.mark.parametrize("state, why", [
    ("unset", "its CRI config_path is unset"),
    ("stale", "its config changed after it started: restart containerd"),
    ("down", "it is installed but not running"),
    ("unknown", "`containerd config dump` failed"),
    ("", "it reported nothing"),
])
def test_containerd_that_does_not_read_certs_d_is_a_problem_line(state, why):
    probes = healthy_probes()
    probes[N1].containerd = state
    result = assess(make_config(), IMAGES, probes)
    assert result.problems == [f"{N1}: containerd does not read /etc/containerd/certs.d ({why}), so its "
                               f"pulls through sea.hub:5000 would not trust the registry's CA"]
    assert cells(result)[3]["containerd"] == (state or "?")


def test_render_table_aligns_columns():
    result = assess(make_config(), IMAGES, healthy_probes())
    lines = render_table(result).splitlines()
    assert lines[0].split() == ["HOST", "ROLE", "REACHABLE", "DEPLOY", "REGISTRY", "IMAGES", "REPLICA",
                                "SEA.HUB", "->", "CA", "CONTAINERD", "LACKS", "ENTRY"]
    assert lines[1].split() == [M1, "master0", "yes", "launch", "running", "2/2", "self", "3m", M1, "ok",
                                "certs.d", "-", "-"]
    assert lines[2].split()[6:8] == [M1, "3m"]
    assert {line.index(M1) for line in lines[1:2]} == {0}


def test_replica_column_shows_source_and_age_and_a_missing_stamp_is_a_problem():
    """A deploy host that holds data without a complete stamp is a problem (pre: the standby
    too; post: master0 only); hosts without a deploy role show '-'."""
    probes = healthy_probes()
    probes[M2].replica = None
    pre = assess(make_config("pre"), IMAGES, probes)
    assert [r["replica"] for r in cells(pre)] == ["self 3m", "none", "-", "-"]
    assert pre.problems == [f"{M2} holds no complete replica stamp (registry/.sealer-replica): its "
                            "data step has not completed; run `pulumi up`"]
    assert assess(make_config("post"), IMAGES, probes).problems == []
    assert pre.hosts[0].as_json()["replica"] == {"source": "self", "age_s": 180, "files": 12, "bytes": 3456}


@pytest.mark.parametrize("text, ok", [
    ('{"source": "self", "completed_at": 5, "files": 1, "bytes": 2, "tree": "ab"}', True),
    ('{"source": "198.18.0.11", "completed_at": 5, "files": 0, "bytes": 0, "tree": "ab", "x": 1}', True),
    ("none", False), ("{}", False), ("[1]", False),
    ('{"source": "self", "completed_at": "5", "files": 1, "bytes": 2, "tree": "ab"}', False),
    ('{"source": "self", "completed_at": true, "files": 1, "bytes": 2, "tree": "ab"}', False),
])
def test_parse_stamp_accepts_the_contract_s_fields_only(text, ok):
    from cli.probe import parse_stamp
    assert (parse_stamp(text) is not None) is ok


def test_parse_probe_reads_every_key():
    out = ("probe=1\nhostname=srl-11\nregistry=running\nref_missing=a:b@sha256:x\nrefs_ok=2\n"
           "resolves=198.18.0.11\nca=ok\ncontainerd=elsewhere:/a:/b\ndisk_avail=123\nregistry_bytes=45\n"
           'replica={"source": "self", "completed_at": 100, "files": 1, "bytes": 2, "tree": "ab"}\nclock=160\n')
    p = parse_probe(M1, out)
    assert p.replica["source"] == "self" and p.replica_age == 60
    assert (p.reachable, p.hostname, p.registry, p.missing_refs, p.refs_ok, p.resolves, p.ca,
            p.containerd, p.disk_avail, p.registry_bytes) == (
        True, "srl-11", "running", ["a:b@sha256:x"], 2, "198.18.0.11", "ok", "elsewhere:/a:/b", 123, 45)
    assert parse_probe(M1, "garbage").reachable is False


def test_ssh_error_picks_the_telling_line():
    assert ssh_error("ssh: connect to host 198.18.0.11 port 22: Connection timed out\n", 255) == "Connection timed out"
    assert ssh_error("ssh: connect to host 1.2.3.4 port 22: Connection refused", 255) == "Connection refused"
    assert ssh_error("", 255) == "ssh exited 255"


def test_pem_digest_ignores_trailing_newlines_and_crlf():
    assert pem_digest(CA_CERT) == pem_digest(CA_CERT.rstrip("\n")) == pem_digest(CA_CERT.replace("\n", "\r\n"))
    assert ca_digest(make_config()) == pem_digest(CA_CERT)


def test_the_trust_checked_for_a_brought_cert_without_a_ca_is_the_cert_itself():
    """An adopted sealer cluster brings its CA-as-server-cert and no ca_cert: the nodes trust that
    cert, so status checks their trust against it (not '-', which checked nothing)."""
    from material import pki

    cert, key = pki.generate_ca()
    config = make_config()
    config = config.model_copy(update={"registry": config.registry.model_copy(update={
        "tls": config.registry.tls.model_copy(update={"ca_cert": None, "ca_key": None,
                                                      "cert": cert, "key": key})})})
    assert ca_digest(config) == pem_digest(cert) != "-"


# -- the probe script itself, run locally (bash, no SSH) ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def put_ref(rootfs: Path, ref: ImageRef) -> None:
    v2 = rootfs / "registry/docker/registry/v2"
    link = v2 / "repositories" / ref.repository / "_manifests/tags" / ref.tag / "current/link"
    link.parent.mkdir(parents=True)
    link.write_text(ref.digest)
    blob = v2 / "blobs/sha256" / ref.digest[7:9] / ref.digest[7:] / "data"
    blob.parent.mkdir(parents=True)
    blob.write_text("{}")


def run_probe(rootfs: Path, tmp_path: Path, ca_sha: str = "-") -> HostProbe:
    config = make_config()
    config.cluster.data_root = str(rootfs.parent.parent)  # rootfs = <data_root>/lab/rootfs
    config.registry.domain = "localhost"
    config.registry.port = free_port()
    run = probe_command(config, all_refs(IMAGES))
    command = run.command
    if ca_sha != "-":
        command = command.replace(ca_digest(config), ca_sha)
    done = subprocess.run(["bash", "-c", command], input=run.stdin, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return parse_probe(M1, done.stdout)


def test_probe_script_reports_present_and_missing_refs(tmp_path):
    """A ref counts when its tag link names its digest and the manifest blob exists."""
    rootfs = tmp_path / "data/lab/rootfs"
    put_ref(rootfs, IMAGES[0].refs[0])
    put_ref(rootfs, IMAGES[0].refs[1])
    # app0: the link names another digest
    link = rootfs / "registry/docker/registry/v2/repositories/library/app0/_manifests/tags/v1/current/link"
    link.parent.mkdir(parents=True)
    link.write_text(D1)
    probe = run_probe(rootfs, tmp_path)
    assert probe.reachable and probe.registry == "stopped"
    assert probe.refs_ok == 2 and probe.missing_refs == [f"library/app0:v1@{D3}"]
    assert probe.resolves == "127.0.0.1"
    assert probe.disk_avail > 0 and probe.registry_bytes > 0


def test_probe_script_reports_a_complete_stamp_and_not_a_broken_one(tmp_path):
    rootfs = tmp_path / "data/lab/rootfs"
    (rootfs / "registry").mkdir(parents=True)
    stamp = rootfs / "registry/.sealer-replica"
    stamp.write_text('{"source": "198.18.0.11", "completed_at": 100, "files": 3, "bytes": 42, '
                     '"tree": "' + "a" * 64 + '"}\n')
    probe = run_probe(rootfs, tmp_path)
    assert probe.replica == {"source": "198.18.0.11", "completed_at": 100, "files": 3, "bytes": 42,
                             "tree": "a" * 64}
    assert probe.replica_age is not None and probe.replica_age > 0
    stamp.write_text('{"source": "198.18.0.11", "completed_at": 100}\n')
    assert run_probe(rootfs, tmp_path).replica is None


def test_probe_script_on_a_host_without_rootfs(tmp_path):
    probe = run_probe(tmp_path / "data/lab/rootfs", tmp_path, ca_sha="0" * 64)
    assert probe.refs_ok == 0 and len(probe.missing_refs) == 3
    assert probe.registry_bytes == 0 and probe.disk_avail > 0
    assert probe.replica is None and probe.clock > 0
    assert probe.ca in ("absent", "differs")


def test_probe_script_is_shellcheck_clean():
    script = Path(__file__).resolve().parents[2] / "scripts/status-probe.sh"
    shellcheck = subprocess.run(["which", "shellcheck"], capture_output=True)
    if shellcheck.returncode != 0:
        pytest.skip("shellcheck not installed")
    done = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def warm_probes(mode: str = "read-only") -> dict[str, HostProbe]:
    probes = healthy_probes()
    probes[M1].registry_mode = "read-write"
    probes[M2].registry, probes[M2].registry_mode = "running", mode
    return probes


def test_a_warm_standby_serving_read_only_is_healthy_and_shown_read_only():
    result = assess(make_config(standby="warm"), IMAGES, warm_probes())
    assert result.problems == []
    assert [(r["deploy"], r["registry"]) for r in cells(result)][:2] == [
        ("launch", "running"), ("standby", "read-only")]


def test_a_warm_standby_serving_read_write_or_nothing_is_a_problem():
    rw = assess(make_config(standby="warm"), IMAGES, warm_probes("read-write"))
    assert rw.problems == [f"{M2} (warm standby) runs its registry read-write: a second registry "
                           "that takes pushes"]
    stopped = warm_probes()
    stopped[M2].registry, stopped[M2].registry_mode = "stopped", ""
    assert assess(make_config(standby="warm"), IMAGES, stopped).problems == [
        f"{M2} (warm standby) runs no registry: nodes' pulls lose this mirror"]


def test_a_cold_standby_running_even_read_only_is_a_second_registry():
    result = assess(make_config(), IMAGES, warm_probes())
    assert result.problems == [f"{M2} runs a registry but is not master0 (a second, possibly stale registry)"]


def test_a_read_only_master0_is_a_problem():
    probes = warm_probes()
    probes[M1].registry_mode = "read-only"
    assert assess(make_config(standby="warm"), IMAGES, probes).problems == [
        f"{M1} (master0) runs its registry read-only: pushes are refused"]


def test_probe_parses_the_registry_mode():
    assert parse_probe(M2, "probe=1\nregistry=running\nregistry_mode=read-only\n").registry_mode == "read-only"
    assert parse_probe(M2, "probe=1\nregistry=stopped\nregistry_mode=\n").registry_mode == ""


@pytest.mark.parametrize("config, mode", [
    ("storage:\n  maintenance:\n    readonly:\n      enabled: true\n", "read-only"),
    ("storage:\n  maintenance: {readonly: {enabled: true}}\n", "read-only"),
    ("storage:\n  maintenance:\n    readonly: {enabled: true}\n", "read-only"),
    ("storage:\n  maintenance:\n    readonly:\n      enabled: false\n", "read-write"),
    ("storage:\n  maintenance:\n    uploadpurging:\n      enabled: true\n", "read-write"),
    ("health:\n  storagedriver:\n    enabled: true\nreadonly:\n  enabled: true\n", "read-write"),
])
def test_registry_config_mode_reads_distribution_s_read_only_key(config, mode):
    scripts = Path(__file__).resolve().parents[2] / "scripts" / "lib"
    done = subprocess.run(["bash", "-c", f"source {scripts}/common.sh; source {scripts}/registry.sh; "
                                         "registry_config_mode"],
                          input=config, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == mode


# ------------------------------------------------------------ node entry point (issue 21)

ENTRY_ADDRESS = "10.103.97.2"


def _raw_entry_values(master0, down_hosts):
    return {
        "master0": master0, "down_hosts": list(down_hosts), "distribution": "pre",
        "cluster": {"name": "lab", "masters": [M1, M2, M3], "nodes": [N1],
                    "ssh": {"private_key_path": "/nonexistent/id"}},
        "registry": {"local_registry": {"deploy_hosts": [M1, M2, M3], "standby": "warm",
                                        "node_entry": {"address": ENTRY_ADDRESS}},
                     "tls": {"ca_cert": CA_CERT, "ca_key": CA_KEY}},
        "apps": {"history": {"type": "boot", "applications": [
            {"name": "app0", "image_id": APP_IMG, "type": "kube"}]},
            "image_store": {"registry": "store.example.com", "images": {
                img.image_id: [str(ref) for ref in img.refs] for img in IMAGES}},
            "cluster_image_id": CLUSTER_IMG},
        "kubernetes": {"kubeconfig_path": "/nonexistent"},
    }


def entry_probes(entry_line: str, resolves: str = ENTRY_ADDRESS) -> dict[str, HostProbe]:
    probes = {ip: healthy_probe(ip, registry="running") for ip in (M1, M2, M3)}
    probes[M2].registry_mode = probes[M3].registry_mode = "read-only"
    probes[M1].registry_mode = "read-write"
    node = parse_probe(N1, f"probe=1\nresolves={resolves}\nca=ok\ncontainerd=certs.d\n"
                           f"entry={entry_line}\n")
    probes[N1] = node
    return probes


def test_probe_asks_for_the_entry_point_only_when_the_stack_has_one():
    refs = all_refs(IMAGES)
    assert probe_command(build_config(_raw_entry_values(M1, ())), refs).command.startswith(
        "bash -s -- --entry-stats 5099 ")
    assert "--entry-stats" not in probe_command(make_config(), refs).command


def test_status_shows_the_entry_point_s_servers_and_judges_them():
    cfg = build_config(_raw_entry_values(M1, ()))
    good = f"{M1}:5000:UP(L7OK) {M2}:5000:UP(L7OK):backup {M3}:5000:UP:backup"
    result = assess(cfg, IMAGES, entry_probes(good))
    assert not [p for p in result.problems if N1 in p], result.problems
    row = {r[0]: r for r in result.rows()}[N1]
    assert row[-1] == f"{M1} UP, standbys 2/2 up"
    node = [h for h in result.hosts if h.ip == N1][0].as_json()
    assert node["entry"][1] == {"address": f"{M2}:5000", "status": "UP", "backup": True,
                                "check": "L7OK"}
    assert node["entry"][2]["check"] == ""  # an older probe: no check result

    # HAProxy's "UP 1/2": up, one failed check of the two that take it down; it still serves
    flapping = f"{M1}:5000:UP_1/2(L4TOUT) {M2}:5000:UP_1/2(L6TOUT):backup {M3}:5000:DOWN:backup"
    result = assess(cfg, IMAGES, entry_probes(flapping))
    assert not [p for p in result.problems if N1 in p], result.problems
    assert {r[0]: r for r in result.rows()}[N1][-1] == f"{M1} UP 1/2, standbys 1/2 up"

    down = f"{M1}:5000:DOWN {M2}:5000:UP:backup {M3}:5000:DOWN_1/2:backup"
    problems = [p for p in assess(cfg, IMAGES, entry_probes(down)).problems if N1 in p]
    assert problems == [f"{N1} (node): the entry point sees master0 {M1} DOWN: pulls go to a warm "
                        "standby, pushes fail"]


@pytest.mark.parametrize("line, resolves, fragment", [
    ("unreachable", ENTRY_ADDRESS, "no entry point answers on its stats port"),
    (f"{M1}:5000:UP {M2}:5000:UP:backup", ENTRY_ADDRESS, "servers are"),
    (f"{M1}:5000:UP {M2}:5000:UP:backup {M3}:5000:UP:backup", M1, "not to its node entry point"),
    (f"{M1}:5000:UP {M2}:5000:DOWN:backup {M3}:5000:MAINT:backup", ENTRY_ADDRESS, "no warm standby UP"),
])
def test_entry_point_problems_name_the_node_and_what_is_wrong(line, resolves, fragment):
    cfg = build_config(_raw_entry_values(M1, ()))
    problems = [p for p in assess(cfg, IMAGES, entry_probes(line, resolves)).problems if N1 in p]
    assert any(fragment in p for p in problems), problems


def test_after_a_recovery_the_fenced_old_master0_must_be_gone_from_the_entry_point():
    """Recovered to M2 with M1 down: the expected servers are M2 then M3; an entry point still
    listing M1 (its node step has not run) is a problem naming both lists."""
    cfg = build_config(_raw_entry_values(M2, [M1]))
    probes = entry_probes(f"{M1}:5000:DOWN {M2}:5000:UP:backup {M3}:5000:UP:backup")
    del probes[M1]
    probes[M2].registry_mode = "read-write"
    problems = [p for p in assess(cfg, IMAGES, probes).problems if N1 in p]
    assert any(f"not {M2}:5000, {M3}:5000 (backup)" in p for p in problems), problems
