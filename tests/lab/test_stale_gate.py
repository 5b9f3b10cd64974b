"""The stale gate of a warm standby (issue 21) on real lab hosts with Debian's docker-registry
(distribution 2.8) launched by the program's own steps: the read-only config carries
distribution's file health check on the data volume's `.sealer-stale` (material/registry_config.py:
/var/lib/registry/.sealer-stale as the registry process sees it, <rootfs>/registry/.sealer-stale
on the host), so while the marker exists every route answers 503; pull-data.sh --replica
creates it before its copy and removes it after the stamp, so a tag moved on master0 is never
served with its old digest by a standby that is catching up, and an interrupted copy keeps the
standby out of service; --master0 and --union remove it; launch, verification and status accept
and report a gated standby, and a complete replica must answer 200/401 again."""
from __future__ import annotations

import hashlib
import io
import json
import shlex
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cli.probe import parse_probe
from components.deploy_host import RootfsPayload
from components.remote_scripts import script_run
from lab import images
from material import pki
from tests.lab.test_pull_data import pull, stamp
from tests.lab.test_readonly_registry import ACCEPT, CERTS_D, configure_node, http_code, write_and_launch
from tests.lab.test_registry import (CLIENT, DOMAIN, PASSWORD, PORT, ROOTFS, SERVER, SERVER_IP,
                                     SPARE, SPARE_IP, USER, make_material)

REG = f"{ROOTFS}/registry"
MARKER = f"{REG}/.sealer-stale"
V2 = "/docker/registry/v2"


def ref_str(ref: dict) -> str:
    return f"{ref['repository']}:{ref['tag']}@{ref['digest']}"


@pytest.fixture(scope="module")
def gated(lab, tmp_path_factory):
    """master0 (SERVER) holds two images' data, stamped "self" by its own data step, and serves
    read-write; the warm standby (SPARE) pulled its replica with --replica and serves it on the
    read-only payload; CLIENT trusts the CA, maps sea.hub to SERVER and lists SPARE as a mirror."""
    store = tmp_path_factory.mktemp("stale-store")
    gen = images.generate(store, apps=1, app_size=512 << 10, layers=2, cluster_size=512 << 10,
                          seed=21, history=None)
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as tar:
        for img in [gen["cluster"], *gen["apps"]]:
            tar.add(Path(img["path"]) / "docker", arcname="docker")
    for host in (SERVER, SPARE):
        lab.run(host, f"rm -rf {REG} && mkdir -p {REG}")
    lab.ssh(SERVER, f"tar -C {REG} -xf -", input=tree.getvalue())
    done = pull(lab, SERVER_IP, "--master0", [])
    assert done.returncode == 0, done.stderr
    material = make_material(pki.generate_ca(), [SERVER_IP, SPARE_IP])
    rw, ro = RootfsPayload.of(material, DOMAIN), RootfsPayload.of(material, DOMAIN, read_only=True)
    write_and_launch(lab, SERVER, rw)
    step = pull(lab, SPARE_IP, "--replica", [SERVER_IP])
    assert step.returncode == 0, step.stderr
    write_and_launch(lab, SPARE, ro)
    configure_node(lab, CLIENT, material.ca_cert, SPARE_IP)
    refs = [r for img in [gen["cluster"], *gen["apps"]] for r in img["refs"]]
    yield {"refs": refs, "ro": ro, "rw": rw}
    for host in (SERVER, SPARE):
        lab.ssh(host, f"bash {ROOTFS}/scripts/stop-registry.sh", check=False)


def tag_digest(lab, ip: str, repo: str, tag: str) -> tuple[int, str]:
    """(HTTP code, Docker-Content-Digest) of REPO:TAG at https://IP:PORT, from CLIENT (TLS by the
    installed CA, credentials from a 0600 file)."""
    cfg = f'cacert = "{CERTS_D}/ca.crt"\nuser = "{USER}:{PASSWORD}"\n'
    done = lab.run(CLIENT, f"umask 077; f=$(mktemp); cat >$f; curl -sS -o /dev/null -D - -K $f "
                           f"-H 'Accept: {ACCEPT}' https://{ip}:{PORT}/v2/{repo}/manifests/{tag}; "
                           "rc=$?; rm -f $f; exit $rc", input=cfg, check=False)
    lines = done.stdout.replace("\r", "").splitlines()
    code = int(lines[0].split()[1]) if lines else 0
    digest = next((ln.split(":", 1)[1].strip() for ln in lines
                   if ln.lower().startswith("docker-content-digest:")), "")
    return code, digest


# One timing round on the standby itself (no SSH in the measured path): the marker appears, /v2/
# is polled every 20 ms until 503; the marker goes, polled until 401 (up, auth on). Milliseconds.
GATE_ROUND = r"""
code() { curl -sk -o /dev/null -w '%{http_code}' --max-time 2 https://127.0.0.1:$2/v2/; }
now() { date +%s%N; }
wait_for() { local s; s=$(now); until [[ "$(code "$1" "$2")" == "$3" ]]; do sleep 0.02; done; echo $(( ($(now) - s) / 1000000 )); }
sleep "0.$((RANDOM % 10))"
touch "$1"; on=$(wait_for "$1" "$2" 503)
sleep "0.$((RANDOM % 10))"
rm -f "$1"; off=$(wait_for "$1" "$2" 401)
echo "$on $off"
"""


def gate_round(lab, host: str) -> tuple[float, float]:
    done = lab.run(host, f"timeout 20 bash -c {shlex.quote(GATE_ROUND)} gate {MARKER} {PORT}")
    on, off = done.stdout.split()
    return int(on) / 1000, int(off) / 1000


def wait_code(lab, host: str, code: int) -> None:
    """Until /v2/ on HOST answers CODE (anonymously: 401 is up), within 10 s."""
    lab.run(host, f"until [ \"$(curl -sk -o /dev/null -w '%{{http_code}}' https://127.0.0.1:{PORT}/v2/)\" = {code} ]; "
                  "do sleep 0.05; done", timeout=10)


def probe(lab, host: str):
    run = script_run("status-probe.sh", ROOTFS, DOMAIN, str(PORT), "-")
    return parse_probe(host, lab.ssh(host, run.command, input=run.stdin).stdout)


def verify(lab, refs: list[str]):
    run = script_run("verify-registry.sh", "--mirror", SPARE_IP, DOMAIN, str(PORT), "https", USER,
                     SERVER_IP, *refs, data=PASSWORD + "\n")
    return lab.ssh(CLIENT, run.command, input=run.stdin, check=False, timeout=300)


def test_the_marker_turns_every_route_503_and_its_removal_brings_the_registry_back(lab, gated):
    """Measured on the standby: /v2/ answers 503 within the file check's 1 s interval after the
    marker appears and 401 again within it after the marker goes; while gated, a manifest by tag
    and a blob answer 503 too (distribution's health handler wraps every route), the body says
    UNAVAILABLE and /debug/health names the marker; master0, without the check, is untouched."""
    ref = gated["refs"][0]
    times = [gate_round(lab, SPARE) for _ in range(5)]
    print("stale gate on / off (s): " + ", ".join(f"{on:.2f}/{off:.2f}" for on, off in times))
    assert all(on < 2.5 and off < 2.5 for on, off in times), times
    lab.run(SPARE, f"touch {MARKER}")
    try:
        wait_code(lab, SPARE, 503)
        assert tag_digest(lab, SPARE_IP, ref["repository"], ref["tag"]) == (503, "")
        code, body = http_code(lab, CLIENT, "GET",
                               f"https://{SPARE_IP}:{PORT}/v2/{ref['repository']}/blobs/{ref['digest']}")
        assert code == 503 and "UNAVAILABLE" in body, body
        health = lab.run(CLIENT, f"curl -sS http://{SPARE_IP}:5002/debug/health").stdout
        assert '"/var/lib/registry/.sealer-stale":"file exists"' in health, health
        assert tag_digest(lab, SERVER_IP, ref["repository"], ref["tag"]) == (200, ref["digest"])
        lab.run(SERVER, f"touch {MARKER}")  # a read-write config has no such check
        time.sleep(1.5)
        assert http_code(lab, CLIENT, "GET", f"https://{SERVER_IP}:{PORT}/v2/", auth=False)[0] == 401
    finally:
        lab.run(SERVER, f"rm -f {MARKER}")
        lab.run(SPARE, f"rm -f {MARKER}")


def move_tag(lab, host: str, ref: dict, to: dict) -> None:
    """A push of another manifest under REF's tag, as distribution lays it out: in REF's
    repository the layer links of TO's config and layers, the revision link of TO's manifest, the
    tag's index entry and then its current link."""
    repo = f"{REG}{V2}/repositories/{ref['repository']}"
    hexd = to["digest"].removeprefix("sha256:")
    manifest = json.loads(lab.run(host, f"cat {REG}{V2}/blobs/sha256/{hexd[:2]}/{hexd}/data").stdout)
    blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    tag = f"{repo}/_manifests/tags/{ref['tag']}"
    links = [f"{repo}/_layers/sha256/{d.removeprefix('sha256:')}={d}" for d in blobs]
    links += [f"{repo}/_manifests/revisions/sha256/{hexd}={to['digest']}",
              f"{tag}/index/sha256/{hexd}={to['digest']}"]
    lab.run(host, "set -e; for l in " + " ".join(links) + "; do mkdir -p ${l%=*}; "
                  "printf %s ${l#*=} >${l%=*}/link; done; "
                  f"printf %s {to['digest']} >{tag}/current/link.new; mv -f {tag}/current/link.new {tag}/current/link")


def test_a_tag_moved_on_master0_is_never_served_old_by_a_standby_catching_up(lab, gated):
    """master0's tag moves; the standby's copy of it fails (a blob on master0 that does not hash to
    its name): the marker it created before copying stays, so the standby answers 503 for the
    tag instead of its old digest; status says stale; the launch step on the gated standby
    (same material, and a fresh start of its registry) succeeds; the verification reports it out
    of service and passes. The copy rerun after the source is fixed completes: the marker is gone
    after the stamp, the tag resolves to master0's new digest there, and the verification checks
    the standby in full again."""
    ref, other = gated["refs"][0], gated["refs"][-1]
    assert ref["digest"] != other["digest"]
    good = b"the blob as named"
    hexd = hashlib.sha256(good).hexdigest()
    blob = f"{REG}{V2}/blobs/sha256/{hexd[:2]}/{hexd}/data"
    wait_code(lab, SPARE, 401)
    move_tag(lab, SERVER, ref, other)
    assert tag_digest(lab, SERVER_IP, ref["repository"], ref["tag"]) == (200, other["digest"])
    assert tag_digest(lab, SPARE_IP, ref["repository"], ref["tag"]) == (200, ref["digest"])  # lags
    lab.run(SERVER, f"mkdir -p {Path(blob).parent} && printf 'not it' >{blob}")
    try:
        failed = pull(lab, SPARE_IP, "--replica", [SERVER_IP])
        assert failed.returncode != 0 and "corrupt blob" in failed.stderr, failed.stderr
        assert "stale gate on" in failed.stderr
        assert lab.run(SPARE, f"test -e {MARKER}", check=False).returncode == 0
        assert stamp(lab, SPARE_IP) is None
        wait_code(lab, SPARE, 503)
        assert tag_digest(lab, SPARE_IP, ref["repository"], ref["tag"]) == (503, "")
        seen = probe(lab, SPARE)
        assert (seen.registry, seen.registry_mode) == ("stale", "read-only")

        again = write_and_launch(lab, SPARE, gated["ro"])
        assert "skipped init-registry.sh" in again.stderr and "replica is stale" in again.stderr, again.stderr
        # A fresh start of the gated registry: distribution runs its first file check one
        # interval after the start, so it answers 200 (401) until then; the launch step returns
        # once the gate holds.
        lab.ssh(SPARE, f"bash {ROOTFS}/scripts/stop-registry.sh && rm -f {ROOTFS}/etc/.sealer-registry-material")
        relaunched = write_and_launch(lab, SPARE, gated["ro"])
        assert "up on :5000" in relaunched.stderr and "stale gate holds" in relaunched.stderr, relaunched.stderr
        assert http_code(lab, CLIENT, "GET", f"https://{SPARE_IP}:{PORT}/v2/", auth=False)[0] == 503

        checked = verify(lab, [ref_str(r) for r in gated["refs"] if r is not ref])
        assert checked.returncode == 0, checked.stderr
        assert f"warm standby {SPARE_IP} is stale" in checked.stderr
        assert checked.stdout.splitlines()[1].endswith(f"1 stale and out of service ({SPARE_IP})"), checked.stdout
    finally:
        lab.run(SERVER, f"printf %s {shlex.quote(good.decode())} >{blob}")
    done = pull(lab, SPARE_IP, "--replica", [SERVER_IP])
    assert done.returncode == 0, done.stderr
    assert "stale gate off" in done.stderr
    assert lab.run(SPARE, f"test -e {MARKER}", check=False).returncode != 0
    assert stamp(lab, SPARE_IP)["source"] == SERVER_IP
    wait_code(lab, SPARE, 401)
    assert tag_digest(lab, SPARE_IP, ref["repository"], ref["tag"]) == (200, other["digest"])
    moved = dict(ref, digest=other["digest"])
    checked = verify(lab, [ref_str(r) for r in gated["refs"] if r is not ref] + [ref_str(moved)])
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[1] == (f"verified {len(gated['refs'])} on 1 warm standbys ({SPARE_IP}): "
                                              "read-only, over TLS by IP"), checked.stdout
    assert probe(lab, SPARE).registry == "running"


def test_a_replica_that_answers_503_without_its_marker_fails_the_launch(lab, gated):
    """A 503 counts as up only while the marker exists: a registry config that fails its health
    check for another reason is not taken for a gated standby."""
    lab.run(SPARE, f"touch {MARKER}")
    try:
        wait_code(lab, SPARE, 503)
        # The marker file renamed away for one check: the registry still answers 503 for up
        # to a second, and the launch's check sees no marker.
        lab.run(SPARE, f"mv {MARKER} {MARKER}.away")
        run = script_run("launch-registry.sh", ROOTFS, str(PORT), DOMAIN, gated["ro"].fingerprint)
        seen = lab.ssh(SPARE, run.command, input=run.stdin, check=False)
        # Either the registry came back in the meantime (kept) or it was relaunched: never an
        # accepted 503 without the marker.
        assert "replica is stale" not in seen.stderr, seen.stderr
    finally:
        lab.run(SPARE, f"rm -f {MARKER} {MARKER}.away")


def test_master0_and_union_steps_never_gate_themselves(lab, gated):
    """A marker left on a host (it was a standby) is removed by --master0 (it keeps its data), by
    --union (sealer's HA layout: every master serves read-write) and by the launch of a
    read-write registry (master0 filled from an image store runs no pull-data.sh)."""
    third = lab.masters()[2].ip
    lab.run(SERVER, f"touch {MARKER}")
    done = pull(lab, SERVER_IP, "--master0", [])
    assert done.returncode == 0, done.stderr
    assert lab.run(SERVER, f"test -e {MARKER}", check=False).returncode != 0
    lab.run(third, f"mkdir -p {REG} && touch {REG}/.sealer-stale")
    union = pull(lab, third, "--union", [SERVER_IP])
    assert union.returncode == 0, union.stderr
    assert lab.run(third, f"test -e {MARKER}", check=False).returncode != 0
    assert stamp(lab, third)["source"] == "union"
    lab.run(SERVER, f"touch {MARKER} && rm -f {ROOTFS}/etc/.sealer-registry-material")
    launched = write_and_launch(lab, SERVER, gated["rw"])
    assert "removed the stale marker" in launched.stderr, launched.stderr
    assert lab.run(SERVER, f"test -e {MARKER}", check=False).returncode != 0


def test_cli_watch_scripts_gate_a_standby_when_master0_s_tree_moves(lab, gated):
    """What `cli watch` runs each round with warm standbys: `watch-probe.sh --tree` on master0
    reports its live tree in the stamp's formula (equal to the standby's stamp after a complete
    copy); a tag moved on master0 changes it; failover.stale_standbys then picks the standby and
    `mark-stale.sh` there creates the marker (its registry answers 503); the next data step lifts
    it. A standby that matches is left serving."""
    from cli.failover import Replica, master0_tree_of, parse_stamp, stale_standbys

    def master0_tree() -> str | None:
        run = script_run("watch-probe.sh", "--tree", ROOTFS, str(PORT))
        return master0_tree_of(lab.ssh(SERVER, run.command, input=run.stdin).stdout)

    wait_code(lab, SPARE, 401)
    before = master0_tree()
    spare = Replica(stamp=parse_stamp(lab.run(SPARE, f"cat {REG}/.sealer-replica").stdout.strip()))
    assert before == spare.stamp.tree
    assert stale_standbys(before, [SPARE_IP], {SPARE_IP: spare}, {}) == {}
    fresh = script_run("mark-stale.sh", ROOTFS, before)
    assert lab.ssh(SPARE, fresh.command, input=fresh.stdin).stdout.split()[0] == "result=fresh"

    ref, other = gated["refs"][1], gated["refs"][0]
    move_tag(lab, SERVER, ref, other)
    after = master0_tree()
    assert after and after != before
    decided = stale_standbys(after, [SPARE_IP], {SPARE_IP: spare}, {})
    assert list(decided) == [SPARE_IP]
    run = script_run("mark-stale.sh", ROOTFS, after)
    assert lab.ssh(SPARE, run.command, input=run.stdin).stdout.split()[0] == "result=marked"
    wait_code(lab, SPARE, 503)
    assert tag_digest(lab, SPARE_IP, ref["repository"], ref["tag"]) == (503, "")
    done = pull(lab, SPARE_IP, "--replica", [SERVER_IP])
    assert done.returncode == 0 and "stale gate off" in done.stderr, done.stderr
    wait_code(lab, SPARE, 401)
    assert tag_digest(lab, SPARE_IP, ref["repository"], ref["tag"]) == (200, other["digest"])
    assert stamp(lab, SPARE_IP)["tree"] == master0_tree()


# On the standby, until STOP exists (at most 60 s): every 5 ms, whether the marker exists.
WATCH_MARKER = r"""
seen=0
for _ in $(seq 12000); do
  [[ -e "$2" ]] && break
  [[ -e "$1" ]] && seen=$((seen + 1))
  sleep 0.005
done
echo "$seen"
"""


def pull_watching_marker(lab, ref: str = "") -> tuple[object, int]:
    """pull-data.sh --replica into SPARE while SPARE polls for the marker: (the step, how many
    polls saw it)."""
    stop = f"{REG}.watch-stop"
    lab.run(SPARE, f"rm -f {stop}")
    seen: list[str] = []
    watcher = threading.Thread(target=lambda: seen.append(lab.run(
        SPARE, f"timeout 70 bash -c {shlex.quote(WATCH_MARKER)} watch {MARKER} {stop}", timeout=80).stdout))
    watcher.start()
    time.sleep(0.3)  # the poll loop runs before the step starts
    try:
        done = pull(lab, SPARE_IP, "--replica", [SERVER_IP])
    finally:
        lab.run(SPARE, f"touch {stop}")
        watcher.join(timeout=90)
        lab.run(SPARE, f"rm -f {stop}")
    return done, int(seen[0].strip())


def test_a_standby_in_sync_is_not_gated_by_the_rerun_but_a_tag_moved_back_is(lab, gated):
    """A recovery reruns each standby's step against the new master0: a standby already holding
    the source's tree and tag heads is never gated (its marker never appears: polled every 5 ms
    on the standby while the step runs), so it keeps serving while the promoted standby
    restarts. A tag moved back on master0 to a digest it named before keeps every path and size
    (the tag's index already lists that digest) and changes only the tag head: that standby is
    gated while it catches up and then serves the head's digest."""
    wait_code(lab, SPARE, 401)
    first = pull(lab, SPARE_IP, "--replica", [SERVER_IP])  # whatever earlier tests left: in sync now
    assert first.returncode == 0, first.stderr
    done, seen = pull_watching_marker(lab)
    assert done.returncode == 0, done.stderr
    assert "in sync with" in done.stderr and "stale gate on" not in done.stderr, done.stderr
    assert seen == 0
    assert lab.run(SPARE, f"test -e {MARKER}", check=False).returncode != 0

    ref, other = gated["refs"][0], gated["refs"][-1]
    code, now = tag_digest(lab, SERVER_IP, ref["repository"], ref["tag"])
    assert code == 200
    if now == ref["digest"]:  # never moved yet: once, so that the tag's index names both digests
        move_tag(lab, SERVER, ref, other)
        assert pull(lab, SPARE_IP, "--replica", [SERVER_IP]).returncode == 0
    back = ref
    tree = f"cd {REG}{V2} && find . -type f -printf '%P %s\\n' | LC_ALL=C sort"
    listing = lab.run(SERVER, tree).stdout
    move_tag(lab, SERVER, ref, back)
    assert lab.run(SERVER, tree).stdout == listing  # same paths and sizes: only the head moved
    assert tag_digest(lab, SPARE_IP, ref["repository"], ref["tag"]) != (200, back["digest"])  # lags
    done, seen = pull_watching_marker(lab)
    assert done.returncode == 0, done.stderr
    assert "stale gate on" in done.stderr and "stale gate off" in done.stderr, done.stderr
    assert seen > 0
    wait_code(lab, SPARE, 401)
    assert tag_digest(lab, SPARE_IP, ref["repository"], ref["tag"]) == (200, back["digest"])
