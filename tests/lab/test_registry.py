"""init-registry.sh on a lab host serves generated images over TLS with htpasswd auth to a client on
another host, and is idempotent."""
from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import json
import subprocess
import tarfile
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab import images
from lab.hosts import MASTER_BASE, NODE_BASE, SUBNET, octet_name

# Instance-aware (SEALER_LAB_INSTANCE): the first master serves, the first node is the client.
SERVER_IP = str(SUBNET.network_address + MASTER_BASE)
SERVER, CLIENT = octet_name(SERVER_IP), octet_name(str(SUBNET.network_address + NODE_BASE))
ROOTFS = "/var/lib/sealer/data/lab/rootfs"
DOMAIN, PORT = "sea.hub", 5000
USER, PASSWORD = "admin", "lab-test-password"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki() -> dict[str, bytes]:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(DOMAIN), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address(SERVER_IP)),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return {"ca": ca.public_bytes(serialization.Encoding.PEM),
            "crt": leaf.public_bytes(serialization.Encoding.PEM), "key": _pem_key(key)}


REGISTRY_YML = """\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: false
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
"""


def put(lab, host: str, path: str, data: bytes, mode: str = "0644") -> None:
    """Write a file on the host over SSH (the way the program does)."""
    lab.ssh(host, f"mkdir -p \"$(dirname '{path}')\" && cat > '{path}' && chmod {mode} '{path}'",
            input=data)


def registry_pids(lab, host: str) -> list[int]:
    out = []
    for pid in lab.pids(host):
        try:
            if b"docker-registry\0serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


def init_registry(lab, host: str, port: int = PORT, check: bool = True):
    return lab.ssh(host, f"cd {ROOTFS}/scripts && bash init-registry.sh {port} "
                         f"{ROOTFS}/registry {DOMAIN}", check=check)


@pytest.fixture(scope="module")
def served(lab, tmp_path_factory):
    """One generated app image served by srl-11 through init-registry.sh; srl-21 trusts the CA and
    maps sea.hub to srl-11 the way sealer does."""
    store = tmp_path_factory.mktemp("store")
    gen = images.generate(store, apps=1, app_size=1 << 20, layers=2, cluster_size=1 << 20,
                          seed=7, history=None)
    app = gen["apps"][0]
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as tar:
        tar.add(Path(app["path"]) / "docker", arcname="docker")
    lab.ssh(SERVER, f"tar -C {ROOTFS}/registry -xf -", input=tree.getvalue())
    pki = make_pki()
    htpasswd = f"{USER}:".encode() + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))
    put(lab, SERVER, f"{ROOTFS}/certs/{DOMAIN}.crt", pki["crt"])
    put(lab, SERVER, f"{ROOTFS}/certs/{DOMAIN}.key", pki["key"], "0600")
    put(lab, SERVER, f"{ROOTFS}/etc/registry_htpasswd", htpasswd + b"\n")
    put(lab, SERVER, f"{ROOTFS}/etc/registry.yml", REGISTRY_YML.encode())
    put(lab, CLIENT, f"/etc/docker/certs.d/{DOMAIN}:{PORT}/ca.crt", pki["ca"])
    lab.ssh(CLIENT, f"sed -i '/{DOMAIN}/d' /etc/hosts && "
                    f"echo '{SERVER_IP} {DOMAIN} #hostalias-set-by-sealer' >> /etc/hosts")
    first = init_registry(lab, SERVER)
    yield {"app": app, "pki": pki, "first": first}
    lab.ssh(SERVER, f"bash {ROOTFS}/scripts/stop-registry.sh")


def curl(lab, path: str, auth: bool = True, port: int = PORT, extra: str = ""):
    cred = f"-u {USER}:{PASSWORD}" if auth else ""
    cmd = (f"curl -sS --max-time 10 --cacert /etc/docker/certs.d/{DOMAIN}:{PORT}/ca.crt {cred} "
           f"{extra} -D /tmp/headers -o /tmp/body https://{DOMAIN}:{port}{path}; "
           f"echo; cat /tmp/headers; echo BODY; base64 -w0 /tmp/body")
    out = lab.ssh(CLIENT, cmd, check=False)
    head, _, body = out.stdout.partition("BODY\n")
    import base64
    return head, base64.b64decode(body.strip() or b""), out


def test_manifest_served_over_tls_with_auth(lab, served):
    ref = served["app"]["refs"][0]
    head, body, out = curl(lab, f"/v2/{ref['repository']}/manifests/{ref['tag']}",
                           extra=f"-H 'Accept: {MANIFEST_ACCEPT}'")
    assert " 200" in head.splitlines()[1], (head, out.stderr)
    digest = [line.split(":", 1)[1].strip() for line in head.splitlines()
              if line.lower().startswith("docker-content-digest:")]
    assert digest == [ref["digest"]]
    assert "sha256:" + hashlib.sha256(body).hexdigest() == ref["digest"]
    config = json.loads(body)["config"]["digest"]
    assert config == served["app"]["image_id"]
    head, blob, _ = curl(lab, f"/v2/{ref['repository']}/blobs/{config}")
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == config


def test_anonymous_access_refused(lab, served):
    ref = served["app"]["refs"][0]
    head, _, _ = curl(lab, f"/v2/{ref['repository']}/manifests/{ref['tag']}", auth=False)
    assert " 401" in head.splitlines()[1]
    head, _, _ = curl(lab, "/v2/", auth=False)
    assert " 401" in head.splitlines()[1]


def test_client_without_ca_fails_tls(lab, served):
    out = lab.ssh(CLIENT, f"curl -sS --max-time 5 -u {USER}:{PASSWORD} "
                          f"https://{DOMAIN}:{PORT}/v2/", check=False)
    assert out.returncode == 60, out.stderr  # curl: peer certificate cannot be authenticated


def test_init_registry_twice_keeps_one_process(lab, served):
    before = registry_pids(lab, SERVER)
    assert len(before) == 1
    again = init_registry(lab, SERVER)
    assert "nothing to do" in again.stderr
    assert registry_pids(lab, SERVER) == before
    assert registry_pids(lab, CLIENT) == []


def test_init_registry_restarts_on_other_port_then_back(lab, served):
    before = registry_pids(lab, SERVER)
    init_registry(lab, SERVER, port=5001)
    moved = registry_pids(lab, SERVER)
    assert len(moved) == 1 and moved != before
    head, _, _ = curl(lab, "/v2/", port=5001)
    assert " 200" in head.splitlines()[1]
    init_registry(lab, SERVER, port=PORT)
    assert len(registry_pids(lab, SERVER)) == 1


def test_registry_config_fallback_and_loud_failure(lab, served):
    """etc/registry_config.yml (sealer basefs name) is used when registry.yml is absent; a broken
    config fails the script with the log tail; a good config afterwards recovers."""
    lab.ssh(SERVER, f"cd {ROOTFS}/etc && mv registry.yml registry_config.yml && "
                    "echo 'storage: {bogus: {}}' >> registry_config.yml")
    try:
        bad = init_registry(lab, SERVER, check=False)
        assert bad.returncode != 0
        assert "registry_config.yml" in bad.stderr
        assert "last log lines" in bad.stderr, bad.stderr
        assert registry_pids(lab, SERVER) == []
    finally:
        put(lab, SERVER, f"{ROOTFS}/etc/registry_config.yml", REGISTRY_YML.encode())
    ok = init_registry(lab, SERVER)
    assert "registry_config.yml" in ok.stderr
    assert len(registry_pids(lab, SERVER)) == 1
    head, _, _ = curl(lab, "/v2/")
    assert " 200" in head.splitlines()[1]


def test_scripts_are_shellcheck_clean():
    scripts = sorted((Path(images.__file__).parent / "rootfs" / "scripts").glob("*.sh"))
    assert scripts
    try:
        p = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.fail("shellcheck not installed (make lab-deps)")
    assert p.returncode == 0, p.stdout
