"""The lab's post-install changes (lab/sealer_ops.py) leave the hosts as sealer's source says:
`sealer run <app>` puts the app's registry data and flag on master0 only without HA and on every
master with it, and appends its extension to the application log; a push lands on one master's
registry only (a real push, served there, 404 elsewhere); a scale-up master holds the cluster
image's data and flag alone and serves nothing else. Real hosts, real registries over TLS."""
from __future__ import annotations

import json

import pytest

from lab import images
from lab.sealer_files import split_application_log
from lab.sealer_ops import (cache_ids, make_image, push_to_master, registry_tree, sealer_run_app,
                            scale_up_master)
from lab.sealer_state import make_sealer_state


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    from lab import Lab

    Lab().down()
    lab = Lab(tmp_path_factory.mktemp("lab-state"))
    lab.up(masters=2, nodes=1)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    gen = images.generate(path, apps=1, app_size=96 << 10, layers=1, cluster_size=192 << 10,
                          seed=5, history=None)
    return path, gen


def make(small_lab, store, flavour):
    path, gen = store
    ids = [gen["cluster_image_id"], *(a["image_id"] for a in gen["apps"])]
    runtimes = {h["ip"]: "containerd-basefs" for h in small_lab.inventory()["hosts"]}
    return make_sealer_state(small_lab, flavour=flavour, history=gen["application"], store=path,
                             image_ids=ids, runtimes=runtimes)


def served(lab, state, host: str, at: str, repo_tag: str) -> str:
    """HTTP status of the manifest of ``repo_tag`` at ``at``'s registry, asked from ``host`` by
    the domain (TLS verified with sealer's CA), the login on curl's stdin."""
    repo, tag = repo_tag.rsplit(":", 1)
    out = lab.run(host, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 "
                        f"--resolve {state.domain}:{state.port}:{at} --cacert {state.trust_files[host]} "
                        f"-K - -H 'Accept: application/vnd.oci.image.manifest.v1+json' "
                        f"https://{state.domain}:{state.port}/v2/{repo}/manifests/{tag}",
                  input=f'user = "{state.username}:{state.password}"\n', check=False)
    return out.stdout.strip()


@pytest.mark.parametrize("flavour", ["v0.11", "v0.11-ha"])
def test_sealer_run_app_adds_data_and_flag_where_sealer_copies_it(small_lab, store, tmp_path,
                                                                  flavour):
    lab = small_lab
    state = make(lab, store, flavour)
    before = {ip: registry_tree(lab, state, ip) for ip in state.masters}
    log_before = lab.host_path(state.master0, state.history_path).read_text()
    image = make_image(tmp_path / "added", "late", seed=11)
    got = sealer_run_app(lab, state, image)
    receivers = state.masters if flavour == "v0.11-ha" else [state.master0]
    assert got == receivers
    for ip in state.masters:
        tree = registry_tree(lab, state, ip)
        flags = cache_ids(lab, state, ip)
        if ip in receivers:
            assert set(before[ip]) < set(tree), ip            # merged, nothing removed
            assert image.image_id in flags, ip
            for repo_tag in image.repo_tags:
                assert served(lab, state, state.nodes[0], ip, repo_tag) == "200", (ip, repo_tag)
        else:
            assert tree == before[ip] and image.image_id not in flags, ip
    for ip in state.hosts:
        assert lab.host_path(ip, f"{state.rootfs}/cache/image/{image.image_id}").exists(), ip
    log_path = lab.host_path(state.master0, state.history_path)
    log = log_path.read_text()
    assert log.startswith(log_before) and log == state.application_log
    assert oct(log_path.stat().st_mode & 0o777) == "0o600"
    last = split_application_log(log)[-1]
    assert last["type"] == "app-installer" and last["applications"][0]["name"] == "late"
    assert len(split_application_log(log)) == len(split_application_log(log_before)) + 1
    # sealer's cache: a second run copies nothing
    assert sealer_run_app(lab, state, image) == []


def test_push_lands_on_one_master_and_scale_up_master_holds_the_cluster_image_only(
        small_lab, store, tmp_path):
    lab = small_lab
    path, gen = store
    state = make(lab, store, "v0.11-ha")
    m0, m1 = state.masters
    node = state.nodes[0]
    pushed = make_image(tmp_path / "pushed", "pushed", seed=12)
    flags_before = cache_ids(lab, state, m1)
    refs = push_to_master(lab, state, m1, pushed)
    assert refs == list(pushed.refs)
    for repo_tag in pushed.repo_tags:
        assert served(lab, state, node, m1, repo_tag) == "200"
        assert served(lab, state, node, m0, repo_tag) == "404"
    assert cache_ids(lab, state, m1) == flags_before      # a push writes no sealer flag
    # the registry wrote the blobs itself: every blob in m1's tree hashes to its name
    for rel in registry_tree(lab, state, m1):
        if rel.startswith("blobs/") and rel.endswith("/data"):
            digest = rel.split("/")[-2]
            out = lab.run(m1, f"sha256sum {state.rootfs}/registry/docker/registry/v2/{rel}").stdout
            assert out.split()[0] == digest, rel

    scale_up_master(lab, state, m1, path)
    assert cache_ids(lab, state, m1) == {gen["cluster_image_id"].removeprefix("sha256:")}
    cluster_refs = [f"{r['repository']}:{r['tag']}" for r in gen["cluster"]["refs"]]
    app_refs = [f"{r['repository']}:{r['tag']}" for a in gen["apps"] for r in a["refs"]]
    for repo_tag in cluster_refs:
        assert served(lab, state, node, m1, repo_tag) == "200", repo_tag
    for repo_tag in [*app_refs, *pushed.repo_tags]:
        assert served(lab, state, node, m1, repo_tag) == "404", repo_tag
        assert served(lab, state, node, m0, repo_tag) == ("200" if repo_tag in app_refs else "404")
    assert json.dumps(sorted(cache_ids(lab, state, m0))) == json.dumps(sorted(state.image_ids))
