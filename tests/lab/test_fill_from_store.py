"""scripts/fill-from-store.sh on real parts: the lab's store registry (a real docker-registry with
its own CA and htpasswd, lab.store) and a registry launched on a lab host by the program's own
steps. skopeo on this machine copies every pinned ref through one SSH connection to the host (a
local forward to its 127.0.0.1:PORT, TLS verified by the cluster CA, the certificate's 127.0.0.1
SAN); the host's registry then serves each ref with the pinned digest, and its stamp says "self".
A second fill copies nothing; a ref the store does not hold fails naming it, with no stamp; no
secret is ever on a command line."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time

import pytest
import yaml

from components.deploy_host import RootfsPayload, StoreSource
from components.remote_scripts import script_run
from lab import images, store as lab_store
from lab.hosts import REPO
from material import pki
from tests.lab.test_readonly_registry import write_and_launch
from tests.lab.test_registry import DOMAIN, PASSWORD, PORT, ROOTFS, SERVER, SERVER_IP, USER, make_material

REG = f"{ROOTFS}/registry"


@pytest.fixture(scope="module")
def setup(lab, tmp_path_factory):
    store_dir = tmp_path_factory.mktemp("fill") / "images"
    images.generate(store_dir, apps=2, app_size=256 << 10, layers=2, cluster_size=512 << 10,
                    seed=21, history=None)
    served = lab_store.ensure(lab, store_dir)
    material = make_material(pki.generate_ca(), [SERVER_IP])
    write_and_launch(lab, SERVER, RootfsPayload.of(material, DOMAIN))
    return served, material


def fill(lab, served, material, refs, *flags, **popen):
    source = StoreSource(registry=served.registry, refs=tuple(refs),
                         ca_pem=served.ca_file.read_text(), login=f"{served.username}:{served.password}",
                         registry_login=material.fill_login, registry_ca=material.ca_cert)
    lines = "".join(f"{n} {base64.b64encode(v.encode()).decode()}\n" for n, v in {
        "ssh": lab.key_path.read_text(), "store-auth": source.login, "dest-auth": source.registry_login,
        "store-ca": source.ca_pem, "dest-ca": source.registry_ca}.items())
    run = script_run("fill-from-store.sh", "--key-stdin", "--host-key", lab.host(SERVER).host_key,
                     *flags, f"root@{SERVER_IP}", "22", ROOTFS, served.registry, str(PORT), *refs,
                     data=lines)
    if popen:
        proc = subprocess.Popen(["bash", "-c", run.command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        proc.stdin.write(run.stdin)
        proc.stdin.close()
        return proc
    return subprocess.run(["bash", "-c", run.command], input=run.stdin, capture_output=True,
                          text=True, timeout=300)


def served_digest(material, ref: str, tmp_path) -> str:
    """The digest the host's registry serves for REPO:TAG (curl from this machine to the host's
    IP, TLS verified by the cluster CA, the login in a 0600 file)."""
    repo, tag = ref.split("@")[0].rsplit(":", 1)
    ca, cfg = tmp_path / "ca.crt", tmp_path / "curl.cfg"
    ca.write_text(material.ca_cert)
    cfg.touch(mode=0o600)
    cfg.write_text(f'user = "{USER}:{PASSWORD}"\n')
    out = subprocess.run(
        ["curl", "-sS", "-I", "-K", str(cfg), "--cacert", str(ca), "-H",
         "Accept: application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
         "application/vnd.docker.distribution.manifest.v2+json",
         f"https://{SERVER_IP}:{PORT}/v2/{repo}/manifests/{tag}"],
        capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if line.lower().startswith("docker-content-digest:"):
            return line.split(":", 1)[1].strip()
    return ""


def stamp(lab) -> dict | None:
    done = lab.run(SERVER, f"cat {REG}/.sealer-replica", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def test_fill_copies_every_pinned_ref_and_stamps_self(lab, setup, tmp_path):
    served, material = setup
    refs = served.refs
    started = time.monotonic()
    done = fill(lab, served, material, refs)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert f"({len(refs)} copied, 0 present)" in done.stdout, done.stdout
    for ref in refs:
        assert served_digest(material, ref, tmp_path) == ref.split("@")[1], ref
    mark = stamp(lab)
    assert mark is not None and mark["source"] == "self" and mark["files"] > 0
    print(f"fill of {len(refs)} refs: {seconds:.2f}s")


def test_a_second_fill_copies_nothing(lab, setup):
    served, material = setup
    started = time.monotonic()
    done = fill(lab, served, material, served.refs)
    assert done.returncode == 0, done.stderr
    assert f"(0 copied, {len(served.refs)} present)" in done.stdout, done.stdout
    print(f"no-op fill: {time.monotonic() - started:.2f}s")


def test_the_fill_records_the_probe_s_generation_and_reports_the_stamped_tree(lab, setup):
    """--data-generation lands in <registry>/.sealer-generation after the stamp, and the last
    stdout line is the stamp's tree (the stack output data_tree)."""
    served, material = setup
    done = fill(lab, served, material, served.refs, "--data-generation", "probe-gen-7")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"tree {stamp(lab)['tree']}", done.stdout
    assert lab.run(SERVER, f"cat {REG}/.sealer-generation").stdout == "probe-gen-7\n"
    bad = fill(lab, served, material, served.refs, "--data-generation", "a b;c")
    assert bad.returncode != 0 and "bad --data-generation" in bad.stderr


def test_a_ref_the_store_does_not_hold_fails_naming_it_and_leaves_no_stamp(lab, setup):
    served, material = setup
    ref = served.refs[0]
    missing = f"{ref.split(':')[0]}:gone@sha256:{'0' * 64}"
    done = fill(lab, served, material, [missing])
    assert done.returncode != 0
    assert missing in done.stderr, done.stderr
    assert stamp(lab) is None
    # The next complete fill stamps again.
    assert fill(lab, served, material, served.refs).returncode == 0
    assert stamp(lab)["source"] == "self"


def test_no_secret_is_on_a_command_line(lab, setup):
    """While a fill runs, no process of the machine (the lab shares one process table) has the
    store's or the registry's password, or their base64, in its argv."""
    served, material = setup
    lab.run(SERVER, f"rm -rf {REG}/docker {REG}/.sealer-replica")
    secrets = [served.password, PASSWORD,
               base64.b64encode(f"{served.username}:{served.password}".encode()).decode(),
               base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]
    seen: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            ps = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
            seen.extend(line for line in ps.splitlines() if any(s in line for s in secrets))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        proc = fill(lab, served, material, served.refs, popen=True)
        proc.wait(timeout=300)
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        stop.set()
        watcher.join()
    assert proc.returncode == 0, err
    assert seen == []
    assert not any(s in out + err for s in secrets)


def test_pin_images_prints_the_digests_the_store_serves(lab, setup, tmp_path):
    """`python -m cli pin-images` asks the store for each REPOSITORY:TAG and prints the
    apps.image_store.images block the generator's own pins agree with; the password only in a file."""
    served, _ = setup
    password_file = tmp_path / "store-password"
    password_file.write_text(served.password + "\n")
    args = [f"{image_id}={','.join(ref.split('@')[0] for ref in refs)}"
            for image_id, refs in served.images.items()]
    done = subprocess.run(
        [sys.executable, "-m", "cli", "pin-images", "--registry", served.registry,
         "--username", served.username, "--password-file", str(password_file),
         "--ca-file", str(served.ca_file), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout) == {"images": served.images}
    # A tag the store does not have is refused, naming it.
    image_id = next(iter(served.images))
    done = subprocess.run(
        [sys.executable, "-m", "cli", "pin-images", "--registry", served.registry,
         "--username", served.username, "--password-file", str(password_file),
         "--ca-file", str(served.ca_file), f"{image_id}=library/nothing:v0"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "library/nothing:v0" in done.stderr, done.stderr
