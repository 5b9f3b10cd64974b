"""The rendered registry material, written by the program's own write-rootfs step and launched by
its launch step through the rootfs' init-registry.sh (the lab's stand-in for sealer's, which runs
the registry with sealer's container mounts and environment), is what a registry on a lab host
really enforces and serves, as seen from another host."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from components.deploy_host import material_fingerprint, rootfs_files, rootfs_payload
from components.remote_scripts import script_run
from lab import images
from lab.hosts import INSTANCE, MASTER_BASE, NODE_BASE, PREFIX
from material import build_material, pki

SERVER, SPARE, CLIENT = (f"{PREFIX}{MASTER_BASE}", f"{PREFIX}{MASTER_BASE + 1}",
                         f"{PREFIX}{NODE_BASE}")
SERVER_IP, SPARE_IP = f"198.18.{INSTANCE}.{MASTER_BASE}", f"198.18.{INSTANCE}.{MASTER_BASE + 1}"
ROOTFS = "/var/lib/sealer/data/lab/rootfs"
VOLUME = f"{ROOTFS}/registry"
DOMAIN, PORT = "sea.hub", 5000
USER, PASSWORD = "admin", "lab-test-password"
CA_PATH = f"/etc/docker/certs.d/{DOMAIN}:{PORT}/ca.crt"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
# A failing start retries without the pause sealer's script takes between attempts.
FAST_FAIL = "SEALER_REGISTRY_RETRY_DELAY_S=0"


def step(lab, host: str, name: str, *args: str, data: str | None = None, check: bool = True):
    """Runs scripts/<name> on the host exactly as the program's host step does (bash -s over SSH,
    the script and its data on stdin)."""
    run = script_run(name, *args, data=data)
    return lab.ssh(host, run.command, input=run.stdin, check=check)


def init_registry(lab, host: str, env: str = "", check: bool = True):
    """sealer's contract, by hand: `cd <rootfs>/scripts && bash init-registry.sh PORT VOLUME DOMAIN`."""
    return lab.ssh(host, f"cd {ROOTFS}/scripts && {env} bash init-registry.sh {PORT} {VOLUME} "
                         f"{DOMAIN}", check=check)


def registry_pids(lab, host: str) -> list[int]:
    out = []
    for pid in lab.pids(host):
        try:
            if b"docker-registry\0serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


def put(lab, host: str, path: str, data: bytes, mode: str = "0644") -> None:
    lab.ssh(host, f"mkdir -p \"$(dirname '{path}')\" && cat > '{path}' && chmod {mode} '{path}'",
            input=data)


def make_material(ca, ips: list[str], insecure: bool = False):
    return build_material(domain=DOMAIN, port=PORT, deploy_ips=ips, insecure=insecure,
                          username=USER, password=PASSWORD, ca_cert=ca[0], ca_key=ca[1])


def write_rootfs(lab, host: str, material) -> tuple[str, str]:
    """The program's `rootfs-<ip>` step; returns its stderr and the launch fingerprint."""
    payload = rootfs_payload(rootfs_files(material, DOMAIN))
    out = step(lab, host, "write-rootfs.sh", ROOTFS, data=payload)
    return out.stderr, material_fingerprint(payload)


def launch(lab, host: str, fingerprint: str, check: bool = True):
    """The program's `registry-launch-<ip>` step."""
    return step(lab, host, "launch-registry.sh", ROOTFS, str(PORT), DOMAIN, fingerprint,
                check=check)


def host_path_config() -> str:
    """The config as this program rendered it before: host paths, which do not exist inside
    sealer's registry container."""
    return yaml.safe_dump({
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": VOLUME}},
        "http": {"addr": f":{PORT}", "tls": {"certificate": f"{ROOTFS}/certs/{DOMAIN}.crt",
                                             "key": f"{ROOTFS}/certs/{DOMAIN}.key"}},
        "auth": {"htpasswd": {"realm": "sealer-registry", "path": f"{ROOTFS}/etc/registry_htpasswd"}},
    })


@pytest.fixture(scope="module")
def served(lab, tmp_path_factory):
    """One generated app image in the VOLUME of SERVER, the material written and the registry
    launched the way the program does; CLIENT trusts the CA and maps sea.hub to SERVER the way
    sealer does, and keeps right and wrong credentials in curl config files."""
    store = tmp_path_factory.mktemp("store")
    gen = images.generate(store, apps=1, app_size=1 << 20, layers=2, cluster_size=1 << 20,
                          seed=7, history=None)
    app = gen["apps"][0]
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as tar:
        tar.add(Path(app["path"]) / "docker", arcname="docker")
    lab.ssh(SERVER, f"mkdir -p {VOLUME} && tar -C {VOLUME} -xf -", input=tree.getvalue())
    ca = pki.generate_ca()
    material = make_material(ca, [SERVER_IP])
    _, fingerprint = write_rootfs(lab, SERVER, material)
    put(lab, CLIENT, CA_PATH, material.ca_cert.encode())
    put(lab, CLIENT, "/root/.sea-right", f'user = "{USER}:{PASSWORD}"\n'.encode(), "0600")
    put(lab, CLIENT, "/root/.sea-wrong", f'user = "{USER}:not-{PASSWORD}"\n'.encode(), "0600")
    lab.ssh(CLIENT, f"sed -i '/{DOMAIN}/d' /etc/hosts && "
                    f"echo '{SERVER_IP} {DOMAIN} #hostalias-set-by-sealer' >> /etc/hosts")
    first = launch(lab, SERVER, fingerprint)
    yield {"app": app, "ca": ca, "material": material, "fingerprint": fingerprint, "first": first}
    lab.ssh(SERVER, f"bash {ROOTFS}/scripts/stop-registry.sh")


def restore(lab, served) -> None:
    """Back to the program's files and a registry launched from them."""
    write_rootfs(lab, SERVER, served["material"])
    lab.ssh(SERVER, f"rm -f {ROOTFS}/etc/.sealer-registry-material")
    launch(lab, SERVER, served["fingerprint"])


def curl(lab, path: str, cred: str | None = "right", scheme: str = "https", extra: str = ""):
    """GET (or `extra`) from CLIENT through sea.hub; returns (status, headers, body, result)."""
    auth = f"-K /root/.sea-{cred}" if cred else ""
    cmd = (f"curl -sS --max-time 10 --cacert {CA_PATH} {auth} {extra} -D /tmp/headers "
           f"-o /tmp/body {scheme}://{DOMAIN}:{PORT}{path}; rc=$?; echo; "
           f"tr -d '\\r' < /tmp/headers; echo BODY; base64 -w0 /tmp/body; exit $rc")
    out = lab.ssh(CLIENT, f"rm -f /tmp/headers /tmp/body; {cmd}", check=False)
    head, _, body = out.stdout.partition("BODY\n")
    lines = [line for line in head.splitlines() if line.strip()]
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    return status, head, base64.b64decode(body.strip() or b""), out


def test_program_writes_the_config_and_the_sed_keeps_it(lab, served):
    """etc/registry_config.yml (what sealer's script reads, and seds) holds the rendered config,
    byte for byte after the launch ran the sed; the program's write step run again writes
    nothing."""
    want = hashlib.sha256(served["material"].registry_yml.encode()).hexdigest()
    got = lab.ssh(SERVER, f"cd {ROOTFS}/etc && sha256sum registry_config.yml").stdout
    assert [line.split()[0] for line in got.splitlines()] == [want]
    again, _ = write_rootfs(lab, SERVER, served["material"])
    assert "wrote:" not in again and again.count("unchanged:") == 4, again


def test_auth_is_enforced(lab, served):
    """401 without credentials and with a wrong password, 200 with the right one; the challenge
    is the realm sealer's container sets in its environment."""
    status, head, _, _ = curl(lab, "/v2/", cred=None)
    assert status == 401, head
    assert 'realm="Registry Realm"' in head
    assert curl(lab, "/v2/", cred="wrong")[0] == 401
    assert curl(lab, "/v2/")[0] == 200


def test_tls_is_enforced(lab, served):
    """The certificate verifies against the stack's CA for the domain; without that CA the
    handshake fails; plain http gets no registry API."""
    status, _, _, out = curl(lab, "/v2/")
    assert status == 200 and out.returncode == 0, out.stderr
    no_ca = lab.ssh(CLIENT, f"curl -sS --max-time 5 -K /root/.sea-right https://{DOMAIN}:{PORT}/v2/",
                    check=False)
    assert no_ca.returncode == 60, no_ca.stderr  # peer certificate cannot be authenticated
    status, _, body, _ = curl(lab, "/v2/", scheme="http")
    assert status == 400 and b"HTTP request to an HTTPS server" in body, (status, body)


def test_data_in_the_volume_is_served(lab, served):
    """The image placed under VOLUME on the host is what the registry serves (VOLUME is its
    /var/lib/registry): manifest and config blob, digests as stored."""
    ref = served["app"]["refs"][0]
    status, head, body, out = curl(lab, f"/v2/{ref['repository']}/manifests/{ref['tag']}",
                                   extra=f"-H 'Accept: {MANIFEST_ACCEPT}'")
    assert status == 200, (head, out.stderr)
    digest = [line.split(":", 1)[1].strip() for line in head.splitlines()
              if line.lower().startswith("docker-content-digest:")]
    assert digest == [ref["digest"]]
    assert "sha256:" + hashlib.sha256(body).hexdigest() == ref["digest"]
    config = json.loads(body)["config"]["digest"]
    assert config == served["app"]["image_id"]
    status, _, blob, _ = curl(lab, f"/v2/{ref['repository']}/blobs/{config}")
    assert status == 200 and "sha256:" + hashlib.sha256(blob).hexdigest() == config


def test_pushed_blob_lands_in_the_volume(lab, served):
    """A blob pushed from CLIENT is stored under VOLUME on the host's filesystem."""
    data = f"pushed through sea.hub on lab instance {INSTANCE}\n".encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    put(lab, CLIENT, "/tmp/blob", data)
    base = f"--cacert {CA_PATH} -K /root/.sea-right"
    out = lab.ssh(CLIENT, f"""
set -euo pipefail
loc=$(curl -sS --max-time 10 {base} -X POST -D - -o /dev/null \
  https://{DOMAIN}:{PORT}/v2/lab/pushed/blobs/uploads/ | tr -d '\\r' |
  awk 'tolower($1) == "location:" {{print $2}}')
case $loc in *\\?*) sep='&' ;; *) sep='?' ;; esac
curl -sS --max-time 10 {base} -X PUT -H 'Content-Type: application/octet-stream' \
  --data-binary @/tmp/blob -o /dev/null -w '%{{http_code}}' "$loc${{sep}}digest={digest}"
""", check=False)
    assert out.stdout.strip() == "201", out.stderr
    hexd = digest.removeprefix("sha256:")
    stored = lab.ssh(SERVER, f"cat {VOLUME}/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data")
    assert stored.stdout.encode() == data


def test_launch_twice_keeps_the_registry_init_twice_replaces_it(lab, served):
    """The launch step with the same material skips init-registry.sh (same pid); sealer's
    init-registry.sh itself always replaces the registry (new pid, still one)."""
    before = registry_pids(lab, SERVER)
    assert len(before) == 1
    again = launch(lab, SERVER, served["fingerprint"])
    assert "skipped init-registry.sh" in again.stderr
    assert registry_pids(lab, SERVER) == before
    init_registry(lab, SERVER)
    after = registry_pids(lab, SERVER)
    assert len(after) == 1 and after != before
    init_registry(lab, SERVER)
    last = registry_pids(lab, SERVER)
    assert len(last) == 1 and last != after
    assert registry_pids(lab, CLIENT) == []
    assert curl(lab, "/v2/")[0] == 200


def test_launch_converges_after_the_registry_died(lab, served):
    """Stamp present but nothing answers (the host rebooted, the registry was killed): the
    launch step runs init-registry.sh again."""
    lab.ssh(SERVER, f"bash {ROOTFS}/scripts/stop-registry.sh")
    assert registry_pids(lab, SERVER) == []
    out = launch(lab, SERVER, served["fingerprint"])
    assert "does not answer" in out.stderr and "skipped" not in out.stderr
    assert len(registry_pids(lab, SERVER)) == 1
    assert curl(lab, "/v2/")[0] == 200


def test_host_path_config_does_not_serve_the_volume(lab, served):
    """The config with host paths (this program's old rendering) names a storage root that does
    not exist in the registry's container: the registry runs on an empty store of its own, not
    the VOLUME, as sealer's container would. The lab is as strict as the real thing."""
    ref = served["app"]["refs"][0]
    put(lab, SERVER, f"{ROOTFS}/etc/registry_config.yml", host_path_config().encode())
    try:
        init_registry(lab, SERVER)
        assert curl(lab, "/v2/")[0] == 200  # runs, with TLS and auth from the environment
        status, _, body, _ = curl(lab, f"/v2/{ref['repository']}/manifests/{ref['tag']}",
                                  extra=f"-H 'Accept: {MANIFEST_ACCEPT}'")
        assert status == 404, body
        assert lab.ssh(SERVER, f"test -d {VOLUME}/docker/registry/v2/repositories/"
                               f"{ref['repository']}", check=False).returncode == 0
    finally:
        restore(lab, served)
    assert curl(lab, f"/v2/{ref['repository']}/manifests/{ref['tag']}",
                extra=f"-H 'Accept: {MANIFEST_ACCEPT}'")[0] == 200


def test_missing_certs_fail_like_the_container(lab, served):
    """TLS is always configured by sealer's script: without <rootfs>/certs/<domain>.crt the
    registry cannot start; the script fails with the registry's log and leaves no process."""
    lab.ssh(SERVER, f"mkdir -p /root/certs-away && mv {ROOTFS}/certs/{DOMAIN}.* /root/certs-away/")
    try:
        bad = init_registry(lab, SERVER, env=FAST_FAIL, check=False)
        assert bad.returncode != 0
        assert "last log lines" in bad.stderr and f"/certs/{DOMAIN}.crt" in bad.stderr, bad.stderr
        assert registry_pids(lab, SERVER) == []
    finally:
        lab.ssh(SERVER, f"mv /root/certs-away/* {ROOTFS}/certs/")
        restore(lab, served)
    assert len(registry_pids(lab, SERVER)) == 1


def test_broken_config_fails_loudly(lab, served):
    """A config the registry refuses fails the script with the log tail; the program's files
    and launch afterwards recover."""
    lab.ssh(SERVER, f"echo 'storage: {{bogus: {{}}}}' >> {ROOTFS}/etc/registry_config.yml")
    try:
        bad = init_registry(lab, SERVER, env=FAST_FAIL, check=False)
        assert bad.returncode != 0
        assert "last log lines" in bad.stderr, bad.stderr
        assert registry_pids(lab, SERVER) == []
    finally:
        restore(lab, served)
    assert len(registry_pids(lab, SERVER)) == 1
    assert curl(lab, "/v2/")[0] == 200


def test_insecure_material_cannot_run_with_sealers_script(lab, served):
    """insecure_mode renders no certificates, but sealer's init-registry.sh always sets the TLS
    environment: the launch fails, naming the missing certificate."""
    ca = served["ca"]
    material = make_material(ca, [SPARE_IP], insecure=True)
    lab.ssh(SPARE, f"rm -f {ROOTFS}/certs/*")
    _, fingerprint = write_rootfs(lab, SPARE, material)
    try:
        out = lab.ssh(SPARE, f"{FAST_FAIL} bash -s -- {ROOTFS} {PORT} {DOMAIN} {fingerprint}",
                      input=script_run("launch-registry.sh", ROOTFS, str(PORT), DOMAIN,
                                       fingerprint).stdin, check=False)
        assert out.returncode != 0
        assert f"/certs/{DOMAIN}.crt" in out.stderr, out.stderr
        assert registry_pids(lab, SPARE) == []
    finally:
        lab.ssh(SPARE, f"bash {ROOTFS}/scripts/stop-registry.sh")


def test_scripts_are_shellcheck_clean():
    scripts = sorted((Path(images.__file__).parent / "rootfs" / "scripts").glob("*.sh"))
    assert scripts
    try:
        p = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.fail("shellcheck not installed (make lab-deps)")
    assert p.returncode == 0, p.stdout
