"""Images a host lacks (issue 20, part 3): `sealer run <app>` adds registry data and a
`<rootfs>/cache/registry/<id>` flag on master0 only. `status` compares master0's live tree with
each replica's stamp tree and names master0's flag ids the replica lacks; `recover` refuses a
candidate lacking ids another live host holds or the last `up` synced (stack outputs
`data_images`, `data_tree`) unless the image store pins them, naming host and ids, exit 2."""

from __future__ import annotations

import argparse
import json
import subprocess
from types import SimpleNamespace

import pytest

from cli import recover
from cli.common import CliError, error_document
from cli.health import assess, render_table
from cli.probe import HostProbe, parse_probe
from tests.unit.test_cli_recover_source import config as adopted_config
from tests.unit.test_cli_status import IMAGES, M1, M2, M3, healthy_probes, make_config

ID_A, ID_B, ID_C = "a" * 64, "b" * 64, "c" * 64
LIVE = "1" * 64    # master0's live tree after `sealer run <app>`
SYNCED = "2" * 64  # the tree the last `up` copied (each replica's stamp)
APP_HEX = IMAGES[1].image_id.removeprefix("sha256:")


def stamp(tree: str = SYNCED, source: str = M1) -> dict:
    return {"source": source, "completed_at": 1, "files": 3, "bytes": 5000, "tree": tree}


# ------------------------------------------------------------------------------ status


def lagging_probes():
    """master0 holds the app's data (flag B, live tree LIVE); replica M2 was synced before."""
    probes = healthy_probes()
    probes[M1].tree = {"digest": LIVE, "files": 12, "bytes": 9000}
    probes[M1].flags = [ID_A, ID_B]
    probes[M2].replica = stamp()
    probes[M2].tree = {"digest": SYNCED, "files": 10, "bytes": 5000}
    probes[M2].flags = [ID_A]
    return probes


def test_a_replica_whose_stamp_is_not_master0_s_live_tree_lacks_master0_s_flags():
    result = assess(make_config(), IMAGES, lagging_probes())
    assert len(result.problems) == 1, result.problems
    problem = result.problems[0]
    assert problem.startswith(f"{M2}: its replica lags master0 {M1}")
    assert f"lacks images {ID_B} (on {M1})" in problem and "sealer run" in problem
    row = {r[0]: r for r in result.rows()}
    assert (row[M1][-2], row[M2][-2]) == ("none", "1 image")
    assert "LACKS" in render_table(result).splitlines()[0]
    m2 = next(h for h in result.hosts if h.ip == M2).as_json()
    assert m2["lacking"] == {"ids": [ID_B], "behind": True, "reference": f"master0 {M1}"}
    assert (m2["flags"], m2["tree"]["digest"]) == (1, SYNCED)


def test_a_replica_in_sync_with_master0_lacks_nothing_even_without_flags():
    """Trees decide: a replica copied before flags were copied along (no flags) is in sync."""
    probes = lagging_probes()
    probes[M2].replica = stamp(LIVE)
    probes[M2].flags = []
    assert assess(make_config(), IMAGES, probes).healthy


def test_a_replica_without_flags_lacks_only_what_master0_flagged_after_its_copy():
    """A replica copied before flags were copied along holds none: a flag of master0 older than
    the replica's copy (its stamp's completed_at, 1 here) was in the tree it copied."""
    probes = lagging_probes()
    probes[M2].flags = []
    probes[M1].flag_times = {ID_A: 0, ID_B: 2}
    result = assess(make_config(), IMAGES, probes)
    assert next(h for h in result.hosts if h.ip == M2).lacking.ids == (ID_B,)


def test_a_lag_without_a_flag_to_name_says_so():
    probes = lagging_probes()
    probes[M2].flags = [ID_A, ID_B]
    result = assess(make_config(), IMAGES, probes)
    assert len(result.problems) == 1 and "no image flag to name" in result.problems[0]
    assert {r[0]: r[-2] for r in result.rows()}[M2] == "tree"


def test_post_mode_standbys_hold_no_data_and_are_not_judged():
    probes = lagging_probes()
    probes[M2].replica = None
    assert assess(make_config(distribution="post"), IMAGES, probes).healthy


def test_probe_reads_tree_and_flags_and_drops_malformed_ones():
    probe = parse_probe(M1, "probe=1\ntree=" + LIVE + " 12 9000\nflags=" + f"{ID_B}:17 {ID_A} junk\n")
    assert probe.tree == {"digest": LIVE, "files": 12, "bytes": 9000}
    assert probe.flags == [ID_A, ID_B] and probe.flag_times == {ID_B: 17}
    assert parse_probe(M1, "probe=1\ntree=\nflags=\n").tree is None
    assert parse_probe(M1, "probe=1\ntree=xyz 1 2\n").tree is None


def test_probe_script_tree_is_the_stamp_s_tree_of_the_same_data(tmp_path):
    """status-probe.sh hashes the live tree as lib/replica.sh's write_stamp does."""
    from tests.unit.test_cli_status import put_ref, run_probe

    rootfs = tmp_path / "data/lab/rootfs"
    put_ref(rootfs, IMAGES[0].refs[0])
    (rootfs / "cache/registry").mkdir(parents=True)
    for name in (ID_B, ID_A, "not-an-id"):
        (rootfs / "cache/registry" / name).write_text("")
    registry = rootfs / "registry"
    subprocess.run(["bash", "-c", 'source scripts/lib/replica.sh && tree_list "$1" > "$2" && '
                    'write_stamp "$1" self "$2"', "x", str(registry), str(tmp_path / "list")],
                   check=True, cwd=recover.__file__.rsplit("/cli/", 1)[0])
    written = json.loads((registry / ".sealer-replica").read_text())
    probe = run_probe(rootfs, tmp_path)
    assert probe.tree["digest"] == written["tree"] and probe.tree["files"] == written["files"]
    assert probe.tree["bytes"] == written["bytes"]
    assert probe.flags == [ID_A, ID_B] and set(probe.flag_times) == {ID_A, ID_B}


# ------------------------------------------------------------------------------ recover


def session_of(config, probes, outputs=None):
    return SimpleNamespace(config=config, images=IMAGES if config.apps.copies_data else [],
                           ssh=lambda: None, project_dir=".",
                           store_password=lambda: None,
                           engine=SimpleNamespace(outputs=lambda *k: dict(outputs or {})))


@pytest.fixture
def hosts(monkeypatch):
    """The hosts the preflight dials answer with ``state.probes``; the old master0 M1 never."""
    state = SimpleNamespace(probes={}, dialled=[])

    def probe_hosts(access, ips, command, timeout):
        state.dialled.extend(ips)
        return {ip: state.probes.get(ip, HostProbe(ip, reachable=False, error="timed out"))
                for ip in ips}

    monkeypatch.setattr(recover, "probe_hosts", probe_hosts)
    monkeypatch.setattr(recover, "preflight_probe", lambda s, host: state.probes[host])
    monkeypatch.setattr(recover.apiserver, "check",
                        lambda s, down, master0: SimpleNamespace(endpoint=f"https://{master0}:6443"))
    return state


def replica(ip, flags, tree=SYNCED, **kw) -> HostProbe:
    return HostProbe(ip, reachable=True, replica=stamp(tree), flags=list(flags),
                     disk_avail=1 << 40, **kw)


def test_recover_refuses_a_candidate_lacking_ids_another_live_host_holds(hosts):
    """M3 got the app's data (a copy that reached it), M2 did not: M2 is refused, named with
    the id and where it is; nothing else is asked (no apiserver, no change)."""
    hosts.probes = {M2: replica(M2, [ID_A]), M3: replica(M3, [ID_A, ID_B])}
    config = adopted_config("pre")
    with pytest.raises(CliError) as info:
        recover.preflight(session_of(config, hosts.probes), M2, [M1])
    e = info.value
    assert e.code == 2
    assert e.message.startswith(f"{M2} lacks images {ID_B} (held by {M3}); the stack names no "
                                "image store")
    assert e.message.endswith("nothing was changed")
    assert e.detail["lacking"]["unfilled"] == [ID_B] and e.detail["lacking"]["held_by"] == {ID_B: [M3]}
    assert M1 not in hosts.dialled
    doc = error_document("recover", argparse.Namespace(stack="s"), 2, e.message, e.detail)
    assert set(doc) == {"command", "stack", "exit_code", "error", "lacking"}


def test_recover_accepts_the_candidate_holding_them(hosts):
    hosts.probes = {M2: replica(M2, [ID_A]), M3: replica(M3, [ID_A, ID_B])}
    checked = recover.preflight(session_of(adopted_config("pre"), hosts.probes), M3, [M1])
    assert checked["lacking"] == {"host": M3, "master0": M3, "ids": [], "held_by": {}, "stale_tree": False,
                                  "filled_by": None, "unfilled": [], "outputs": False}


def test_recover_refuses_ids_of_the_last_up_and_an_older_tree(hosts):
    """With the stack outputs: an id of data_images nobody live holds, and a stamp whose tree
    is not data_tree, both refuse; the same candidate passes once it matches them."""
    hosts.probes = {M2: replica(M2, [ID_A]), M3: replica(M3, [ID_A])}
    config = adopted_config("pre")
    outputs = {"data_images": [ID_A, ID_C], "data_tree": SYNCED}
    with pytest.raises(CliError, match=rf"{M2} lacks images {ID_C} \(synced by the last `up`\)"):
        recover.preflight(session_of(config, hosts.probes, outputs), M2, [M1])
    outputs = {"data_images": [ID_A], "data_tree": LIVE}
    with pytest.raises(CliError, match="replica stamp's tree is not the tree the last `up` synced"):
        recover.preflight(session_of(config, hosts.probes, outputs), M2, [M1])
    outputs = {"data_images": [f"sha256:{ID_A}"], "data_tree": SYNCED}
    checked = recover.preflight(session_of(config, hosts.probes, outputs), M2, [M1])
    assert checked["lacking"]["outputs"] is True and checked["lacking"]["ids"] == []


def test_post_mode_judges_the_host_the_data_comes_from(hosts):
    """Without its own replica the new master0 copies the first live replica: that one lacking
    ids another holds refuses the recovery."""
    hosts.probes = {M2: HostProbe(M2, reachable=True, disk_avail=1 << 40),
                    M3: replica(M3, [ID_A])}
    config = adopted_config("post")
    session = session_of(config, hosts.probes, {"data_images": [ID_A, ID_B]})
    with pytest.raises(CliError, match=rf"{M3} \(the new master0 {M2} would copy its data from "
                                       rf"it\) lacks images {ID_B}"):
        recover.preflight(session, M2, [M1])


def test_the_image_store_fills_the_ids_it_pins_and_not_others(hosts, monkeypatch):
    monkeypatch.setattr(recover, "check_store", lambda *a: SimpleNamespace(
        problems=[], bytes=0, served=3, refs=3))
    config = make_config(distribution="post")
    missing = [str(IMAGES[1].refs[0])]
    hosts.probes = {M2: replica(M2, [ID_A], missing_refs=missing),
                    M1: replica(M1, [])}
    session = session_of(config, hosts.probes, {"data_images": [ID_A, APP_HEX]})
    checked = recover.preflight(session, M2, [M1])
    assert checked["lacking"]["ids"] == [APP_HEX] and checked["lacking"]["unfilled"] == []
    assert checked["lacking"]["filled_by"] == "the image store store.example.com:443"
    session = session_of(config, hosts.probes, {"data_images": [ID_A, APP_HEX, ID_C]})
    with pytest.raises(CliError, match=rf"lacks images {ID_C} .*pins none of them"):
        recover.preflight(session, M2, [M1])
