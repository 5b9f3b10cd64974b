"""lab/store.py: the lab's image store registry serves every generated image by its pinned digest
to the reader it knows, over TLS that verifies with the store's own CA, from the root namespace
and from a lab host; it refuses anonymous reads and every push; `ensure` is idempotent (same
process, same tree), picks up new images without a restart, and `stop` / `python -m lab down`
leave no process behind."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import images, store
from lab.hosts import GATEWAY, REPO, _alive

CREDS = f"{store.USERNAME}:{store.STORE_PASSWORD}"
TARGET_PORT = 5001  # a plain registry inside a lab host, the copy's destination


@pytest.fixture(scope="module")
def served(lab):
    images.generate(lab.state / "images", apps=2, app_size=256 << 10, layers=2,
                    cluster_size=512 << 10, seed=0, history=None)
    reg = store.ensure(lab)
    yield reg
    store.stop(lab)


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def by_digest(ref: str) -> tuple[str, str, str]:
    """("repo", "tag", "sha256:...") of "repo:tag@sha256:..."."""
    name, digest = ref.split("@")
    repo, tag = name.rsplit(":", 1)
    return repo, tag, digest


def curl_status(path: str, *args: str) -> str:
    done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                           *args, f"https://{store.ADDRESS}{path}"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout


def registry_processes(reg_dir: Path) -> list[int]:
    want = f"docker-registry\0serve\0{reg_dir / 'registry.yml'}\0".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == want:
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_config_block_names_every_generated_image(lab, served):
    """The `apps.image_store` block: address, reader, the CA file, every image id of the store
    with its refs pinned by digest, and the password only as a secret path."""
    cfg = served.config()
    assert cfg["registry"] == f"{GATEWAY}:5443" and cfg["username"] == "store-reader"
    assert Path(cfg["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "password" not in cfg and store.SECRETS == {"apps.image_store.password":
                                                       store.STORE_PASSWORD}
    ids = {json.loads(p.read_text())["image_id"]
           for p in (lab.state / "images").glob("*/image.json")}
    assert set(cfg["images"]) == ids and len(ids) == 3
    assert all(len(by_digest(r)[2]) == 71 for refs in cfg["images"].values() for r in refs)


def test_every_ref_is_served_with_its_pinned_digest(served):
    """By digest and by tag, the manifest's bytes hash to the pinned digest."""
    for ref in served.refs:
        repo, tag, digest = by_digest(ref)
        for name in (f"{repo}@{digest}", f"{repo}:{tag}"):
            raw = skopeo("inspect", "--raw", "--cert-dir", str(served.cert_dir), "--creds", CREDS,
                         f"docker://{store.ADDRESS}/{name}").stdout
            assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest, name


def test_anonymous_access_is_refused(served):
    repo, _, digest = by_digest(served.refs[0])
    ca = ["--cacert", str(served.ca_file)]
    assert curl_status("/v2/", *ca) == "401"
    assert curl_status(f"/v2/{repo}/manifests/{digest}", *ca) == "401"
    assert curl_status("/v2/", *ca, "-u", "store-reader:wrong") == "401"
    assert curl_status("/v2/", *ca, "-u", CREDS) == "200"


def test_tls_verifies_with_the_store_ca_only(served):
    """The server certificate names the gateway IP and chains to the store CA, not to the
    machine's trust store."""
    ctx = ssl.create_default_context(cafile=str(served.ca_file))
    with socket.create_connection((GATEWAY, store.PORT), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=GATEWAY) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection((GATEWAY, store.PORT), timeout=5) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname=GATEWAY)
    done = skopeo("inspect", "--raw", "--creds", CREDS, f"docker://{store.ADDRESS}/library/app0:v1",
                  check=False)
    assert done.returncode != 0 and "certificate" in done.stderr


def test_a_push_is_refused(served, tmp_path):
    """Read-only storage: the reader can't start an upload, and a copy into the store fails."""
    assert curl_status("/v2/library/app0/blobs/uploads/", "--cacert", str(served.ca_file),
                       "-u", CREDS, "-X", "POST") == "405"
    repo, _, digest = by_digest(served.refs[0])
    done = skopeo("copy", "--src-cert-dir", str(served.cert_dir), "--src-creds", CREDS,
                  "--dest-cert-dir", str(served.cert_dir), "--dest-creds", CREDS,
                  f"docker://{store.ADDRESS}/{repo}@{digest}",
                  f"docker://{store.ADDRESS}/pushed/copy:v1", check=False)
    assert done.returncode != 0
    assert not (served.root / "docker/registry/v2/repositories/pushed").exists()


def test_ensure_twice_keeps_process_and_tree(lab, served):
    root_target = os.readlink(served.root)
    t0 = time.monotonic()
    again = store.ensure(lab)
    print(f"ensure with nothing to do: {time.monotonic() - t0:.3f}s")
    assert again.pid == served.pid and os.readlink(again.root) == root_target
    assert again.images == served.images


def test_union_tree_is_hardlinks_of_the_store(lab, served):
    """No data is copied: every blob in the union tree is the store's inode."""
    blobs = list((served.root / "docker/registry/v2/blobs").glob("sha256/*/*/data"))
    assert blobs and all(b.stat().st_nlink >= 2 for b in blobs)


def test_new_images_are_served_without_a_restart(lab, served):
    before = os.readlink(served.root)
    images.generate(lab.state / "images", apps=1, app_size=128 << 10, layers=1,
                    cluster_size=256 << 10, seed=7, history=None)
    reg = store.ensure(lab)
    assert reg.pid == served.pid and os.readlink(reg.root) != before
    assert len(reg.images) == 5 and set(served.images) < set(reg.images)
    for image_id in set(reg.images) - set(served.images):
        for ref in reg.images[image_id]:
            repo, _, digest = by_digest(ref)
            raw = skopeo("inspect", "--raw", "--cert-dir", str(reg.cert_dir), "--creds", CREDS,
                         f"docker://{store.ADDRESS}/{repo}@{digest}").stdout
            assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
    # The old tree is gone (the store's own files are not: they were hardlinks).
    roots = [p.name for p in (served.root.parent / "roots").iterdir()]
    assert roots == [os.readlink(reg.root).split("/")[1]]


def test_a_host_copies_an_image_from_the_store(lab, served):
    """From master0's namespaces (where the fill runs): the store answers over the bridge, and
    `skopeo copy --all --preserve-digests` lands the image with its digest in a registry there."""
    host = lab.masters()[0].name
    ca_dir = lab.host_path(host, "/tmp/store-ca")
    ca_dir.mkdir(exist_ok=True)
    (ca_dir / "ca.crt").write_bytes(served.ca_file.read_bytes())
    assert lab.run(host, f"curl -s -o /dev/null -w '%{{http_code}}' --cacert /tmp/store-ca/ca.crt "
                         f"-u {CREDS} https://{store.ADDRESS}/v2/").stdout == "200"
    lab.host_path(host, "/tmp/target.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        "    rootdirectory: /tmp/target-root\n"
        f"http:\n  addr: 127.0.0.1:{TARGET_PORT}\n  secret: lab-test\n")
    lab.start_service(host, "target-registry", ["/usr/bin/docker-registry", "serve",
                                                "/tmp/target.yml"])
    try:
        deadline = time.monotonic() + 10
        while lab.run(host, f"curl -sf http://127.0.0.1:{TARGET_PORT}/v2/", check=False).returncode:
            assert time.monotonic() < deadline, "target registry did not start"
            time.sleep(0.05)
        cluster = [refs for refs in served.images.values()
                   if any(r.startswith("sealer/cluster-base:") for r in refs)][0]
        for ref in cluster:
            repo, tag, digest = by_digest(ref)
            t0 = time.monotonic()
            lab.run(host, f"skopeo copy --all --preserve-digests --src-cert-dir /tmp/store-ca "
                          f"--src-creds {CREDS} --dest-tls-verify=false "
                          f"docker://{store.ADDRESS}/{repo}@{digest} "
                          f"docker://127.0.0.1:{TARGET_PORT}/{repo}:{tag}")
            print(f"skopeo copy {repo}:{tag} store -> {host}: {time.monotonic() - t0:.2f}s")
            raw = lab.run(host, f"skopeo inspect --raw --tls-verify=false "
                                f"docker://127.0.0.1:{TARGET_PORT}/{repo}:{tag}").stdout
            assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
    finally:
        lab.stop_service(host, "target-registry", forget=True)


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None when there is no PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def test_stop_leaves_no_process(lab, served):
    reg_dir = served.root.parent
    assert registry_processes(reg_dir) == [served.pid]
    started = start_time(served.pid)
    assert started is not None
    assert store.stop(lab) is True
    # Gone: no such pid, or a zombie left for its parent to reap (a registry started by an earlier
    # `python -m lab` process was adopted by PID 1, which reaps when it gets to it: CI saw it still
    # there), or another process now holds that pid (pids wrap at pid_max under a busy run).
    assert registry_processes(reg_dir) == []
    assert not _alive(served.pid) or start_time(served.pid) != started
    assert store.probe() is None and store.status(lab)["running"] is False
    assert store.stop(lab) is False


def test_lab_down_stops_it(lab, served):
    """`python -m lab down` stops a running store registry and removes its tree, keeping its CA."""
    reg = store.ensure(lab)
    assert reg.pid != served.pid and registry_processes(reg.root.parent) == [reg.pid]
    done = subprocess.run([sys.executable, "-m", "lab", "--state-dir", str(lab.state), "down"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Started by this process, stopped by another: at most a zombie until this one reaps it.
    assert registry_processes(reg.root.parent) == [] and not _alive(reg.pid)
    assert not reg.root.parent.joinpath("roots").exists() and reg.ca_file.exists()
