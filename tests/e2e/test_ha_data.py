"""Registry data that changed after the install, caught up by `pulumi up` (issue 20, parts 1, 3
and 4), on clusters the lab makes as sealer's source leaves them (lab/sealer_state.py) and changes
as sealer and its users do (lab/sealer_ops.py), adopted with `python -m cli adopt`:

- HA (v0.11, sealer's default): a push that landed on one master and a master added by
  scale-up (the cluster image's data only) are both made complete by one `up`: every master's
  registry then holds the union of the masters' trees (stamp "union", flags of every image), real
  pulls get every image from each master and through lvscare's VIP from a docker node and a
  basefs containerd node; no hosts line or trust file changes; a second `up` changes nothing.
- `ha: false`: a `sealer run <app>` adds its data and flag on master0 only; `up` resyncs every
  replica (stamp tree = master0's, the flag copied), a replica's data served by a registry reads
  the new image with its digest, and a second `up` changes nothing.

Real engine, real lab hosts and registries, real dockerd and containerd, real kube-apiserver.
"""

from __future__ import annotations

import time

import pytest

from lab import controlplane
from lab import vip as lab_vip
from lab.sealer_ops import cache_ids, make_image, push_to_master, registry_tree, scale_up_master, sealer_run_app
from lab.sealer_state import pull
from lab.stack import ProgramStack
from tests.e2e.labstack import engine_env, lab_env  # noqa: F401  (module-scoped lab)
from tests.e2e.test_adopt import adopt_and_up, forget, make, stamp

pytestmark = pytest.mark.e2e

HA_STACK, PLAIN_STACK = "e2e-data-ha", "e2e-data-plain"


@pytest.fixture(scope="module")
def engine(toolchain_env):
    env = engine_env(toolchain_env)
    forget(env, HA_STACK, PLAIN_STACK)
    yield env
    forget(env, HA_STACK, PLAIN_STACK)


@pytest.fixture(scope="module")
def cp(lab_env):  # noqa: F811
    return controlplane.up(lab_env.lab)


def repo_tags(refs) -> list[tuple[str, str]]:
    return [(r.split("@")[0], r.split("@")[1]) for r in refs]


def pulls(lab_env, sealer, hosts, refs) -> dict[str, float]:  # noqa: F811
    """Every ref pulled for real on each host by the engine it runs, the tag resolving to its
    digest; returns the seconds of each host's pulls."""
    took = {}
    for ip in hosts:
        began = time.monotonic()
        for repo_tag, digest in repo_tags(refs):
            got = pull(lab_env.lab, sealer, ip, repo_tag)
            assert got.ok, f"{ip} ({sealer.runtimes[ip]}) {repo_tag}: {got.stderr[-400:]}"
            assert got.digest == digest, (ip, repo_tag, got.digest)
        took[ip] = round(time.monotonic() - began, 1)
    return took


def outputs(stack: ProgramStack) -> dict:
    return stack.outputs()


def test_ha_push_to_one_master_and_a_scale_up_master_end_complete_on_every_master(
        lab_env, cp, engine, tmp_path):  # noqa: F811
    lab = lab_env.lab
    sealer = make(lab_env, cp, "v0.11-ha")
    adopt_and_up(lab_env, sealer, engine, HA_STACK)
    stack = ProgramStack(HA_STACK, engine)
    m0, m1, m2 = sealer.masters
    all_refs = list(lab_env.refs)

    pushed = make_image(tmp_path / "pushed", "pushed", seed=31)
    push_to_master(lab, sealer, m1, pushed)
    scale_up_master(lab, sealer, m2, lab_env.store)
    # Before the up: each of those gaps is real (404 on the masters lacking the data).
    assert not pull(lab, sealer, m0, pushed.repo_tags[0]).ok
    assert not pull(lab, sealer, m2, all_refs[-1].split("@")[0]).ok
    hosts_before = {ip: lab.run(ip, "cat /etc/hosts").stdout for ip in sealer.hosts}
    vip_before = {ip: lab_vip.status(lab, ip) for ip in sealer.nodes}

    began = time.monotonic()
    report = stack.up()
    seconds = time.monotonic() - began
    print(f"HA up with the union: {seconds:.1f} s; steps {report.changed()}")
    assert {f"data-{ip}" for ip in sealer.masters} <= set(report.changed()), report.changed()
    trees = {ip: registry_tree(lab, sealer, ip) for ip in sealer.masters}
    assert trees[m0] == trees[m1] == trees[m2]
    out = outputs(stack)
    wanted_ids = sorted({*sealer.image_ids})
    for ip in sealer.masters:
        got = stamp(lab, sealer, ip)
        assert got["source"] == "union" and got["tree"] == out["data_tree"], (ip, got)
        assert sorted(cache_ids(lab, sealer, ip)) == wanted_ids, ip
    assert out["data_images"] == wanted_ids
    for ip in sealer.hosts:
        assert lab.run(ip, "cat /etc/hosts").stdout == hosts_before[ip], ip
    refs = [*all_refs, *pushed.refs]
    each_master = pulls(lab_env, sealer, sealer.masters, refs)       # sea.hub -> the master itself
    through_vip = pulls(lab_env, sealer, sealer.nodes, refs)        # sea.hub -> lvscare's VIP
    print(f"pulls of {len(refs)} refs per host: masters {each_master}, nodes via VIP {through_vip}")
    assert {sealer.runtimes[ip].split("-")[0] for ip in sealer.nodes} == {"docker", "containerd"}
    for ip in sealer.nodes:
        assert lab_vip.status(lab, ip) == vip_before[ip] == {m: True for m in sealer.masters}, ip

    again = stack.up()
    assert again.changed() == {}, again.changed()
    assert outputs(stack)["data_tree"] == out["data_tree"]


def test_non_ha_sealer_run_app_on_master0_is_resynced_to_the_replicas(
        lab_env, cp, engine, tmp_path):  # noqa: F811
    lab = lab_env.lab
    sealer = make(lab_env, cp, "v0.11")
    adopt_and_up(lab_env, sealer, engine, PLAIN_STACK)
    stack = ProgramStack(PLAIN_STACK, engine)
    m0, *replicas = sealer.masters
    before = outputs(stack)
    assert before["data_tree"] == stamp(lab, sealer, m0)["tree"]

    app = make_image(tmp_path / "late", "late", seed=32)
    assert sealer_run_app(lab, sealer, app) == [m0]
    for ip in replicas:
        assert app.image_id not in cache_ids(lab, sealer, ip)

    began = time.monotonic()
    report = stack.up()
    print(f"non-HA up after `sealer run`: {time.monotonic() - began:.1f} s; steps {report.changed()}")
    assert {f"data-{ip}" for ip in sealer.masters} <= set(report.changed()), report.changed()
    out = outputs(stack)
    source = stamp(lab, sealer, m0)
    assert source["source"] == "self" and out["data_tree"] == source["tree"] != before["data_tree"]
    assert app.image_id in out["data_images"]
    for ip in replicas:
        got = stamp(lab, sealer, ip)
        assert (got["source"], got["tree"]) == (m0, source["tree"]), (ip, got)
        assert registry_tree(lab, sealer, ip) == registry_tree(lab, sealer, m0), ip
        assert app.image_id in cache_ids(lab, sealer, ip), ip
        for repo_tag, digest in repo_tags(app.refs):
            assert serves_from_replica(lab, sealer, ip, repo_tag) == digest, (ip, repo_tag)
    pulls(lab_env, sealer, sealer.nodes, app.refs)   # through master0, as sealer left the nodes

    again = stack.up()
    assert again.changed() == {}, again.changed()


def serves_from_replica(lab, sealer, ip: str, repo_tag: str) -> str:
    """The digest a real `docker-registry`, started read-only on the replica's own data (its
    registry is a cold standby: stopped), serves for ``repo_tag`` on the replica's loopback."""
    repo, tag = repo_tag.rsplit(":", 1)
    config = (f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {sealer.rootfs}/registry\n"
              "  maintenance:\n    readonly:\n      enabled: true\n"
              "http:\n  addr: 127.0.0.1:5999\nlog:\n  level: error\n")
    script = f"""
set -e
cfg=$(mktemp)
cat > "$cfg" <<'EOF'
{config}EOF
docker-registry serve "$cfg" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid; rm -f "$cfg"' EXIT
for i in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:5999/v2/ && break; sleep 0.1; done
curl -sf -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \\
  http://127.0.0.1:5999/v2/{repo}/manifests/{tag} | tr -d '\\r' |
  awk 'tolower($1) == "docker-content-digest:" {{ print $2 }}'
"""
    return lab.run(ip, script, timeout=60).stdout.strip()
