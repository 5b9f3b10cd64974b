"""A real Kubernetes control plane for the e2e tier: etcd + kube-apiserver (+ a kube-controller-manager
running only the garbage collector and namespace controller) in the root namespace.

- etcd listens on 127.0.0.1 only (client 23790, peer 23800 unless given: a second control plane on
  the machine, e.g. `SEALER_LAB_INSTANCE=1`'s bench, passes its own), data under
  `.lab/controlplane/etcd/` (fsync off: lab data).
- kube-apiserver listens on `<address>:6443` (default 198.18.0.1, the lab bridge's address, so lab
  hosts and the Pulumi program reach it at the same URL), TLS from a lab CA made here with
  `cryptography`; `.lab/kubeconfig` holds an admin (system:masters) client certificate.
- Both run in their own session in the root namespace with pidfiles: killing a lab host (its
  namespaces) or the process that started them leaves them running; `down` stops exactly them.

CLI: `python -m lab.controlplane up|down|status [--address A] [--port P] [--etcd-client-port N]
[--etcd-peer-port N] [--lab-dir D] [--purge]`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LAB_DIR = REPO / ".lab"
DEFAULT_ADDRESS = "198.18.0.1"
DEFAULT_PORT = 6443
# Off the usual 2379/2380 so a distribution etcd on the machine does not collide.
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
SERVICE_CIDR = "10.96.0.0/24"  # only a setting: nothing routes to it
CONTEXT = "sealer-lab"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


@dataclasses.dataclass(frozen=True)
class ControlPlane:
    address: str
    port: int
    kubeconfig: Path
    state_dir: Path

    @property
    def server(self) -> str:
        return f"https://{_host_for_url(self.address)}:{self.port}"


def _host_for_url(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _state_dir(lab_dir: Path) -> Path:
    return lab_dir / "controlplane"


# ---------------------------------------------------------------- certificates

def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(subject: x509.Name, public_key, issuer: x509.Name, signing_key, *, ca: bool,
           usages: list, sans: list | None = None, days: int = 3650) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False, crl_sign=False,
            content_commitment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _serving_sans(address: str) -> list:
    ips = {ipaddress.ip_address(a) for a in (address, "127.0.0.1", DEFAULT_ADDRESS, "10.96.0.1")}
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"]
    return [x509.DNSName(n) for n in names] + [x509.IPAddress(ip) for ip in sorted(ips, key=str)]


def ensure_pki(pki: Path, address: str) -> None:
    """CA, serving cert (re-issued when the address is not in it), service-account key pair and the
    admin client cert. Existing material is kept so a restart keeps the kubeconfig valid."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = pki / "ca.crt", pki / "ca.key"
    if not (ca_cert_path.exists() and ca_key_path.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealer-lab-kubernetes-ca")])
        ca_cert = _issue(name, ca_key.public_key(), name, ca_key, ca=True, usages=[])
        _write_private(ca_key_path, _pem_key(ca_key))
        ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        for stale in ("apiserver.crt", "admin.crt"):
            (pki / stale).unlink(missing_ok=True)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)

    serving = pki / "apiserver.crt"
    wanted_ip = ipaddress.ip_address(address)
    if serving.exists():
        sans = x509.load_pem_x509_certificate(serving.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
        if wanted_ip not in sans:
            serving.unlink()
    if not serving.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                      key.public_key(), ca_cert.subject, ca_key, ca=False,
                      usages=[ExtendedKeyUsageOID.SERVER_AUTH], sans=_serving_sans(address))
        _write_private(pki / "apiserver.key", _pem_key(key))
        serving.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    admin = pki / "admin.crt"
    if not admin.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "sealer-lab-admin")])
        cert = _issue(subject, key.public_key(), ca_cert.subject, ca_key, ca=False,
                      usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
        _write_private(pki / "admin.key", _pem_key(key))
        admin.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    if not (pki / "sa.key").exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(pki / "sa.key", _pem_key(key))
        (pki / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def write_kubeconfig(path: Path, pki: Path, server: str) -> None:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": CONTEXT, "cluster": {
            "server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": f"{CONTEXT}-admin", "user": {
            "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": f"{CONTEXT}-admin"}}],
        "current-context": CONTEXT,
    }
    # JSON is YAML: no YAML writer needed, and kubectl/client-go/pulumi-kubernetes all read it.
    _write_private(path, (json.dumps(config, indent=2) + "\n").encode())


# ---------------------------------------------------------------- processes

def _read_pid(pidfile: Path, expect: str) -> int | None:
    """The pid in pidfile if that process is alive and still runs `expect` (not a recycled pid)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if not cmdline or Path(cmdline[0].decode(errors="replace")).name != expect:
        return None
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if line.startswith("State:"))
    except (OSError, StopIteration):
        return None
    return None if "Z" in state.split()[1] else pid


def _start(argv: list[str], log: Path, pidfile: Path, env: dict[str, str]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, cwd=str(pidfile.parent))
    pidfile.write_text(f"{proc.pid}\n")
    # Until exec, /proc/<pid>/cmdline is still Python's: wait for it so liveness checks are exact.
    deadline = time.monotonic() + 10
    while _read_pid(pidfile, Path(argv[0]).name) is None and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return proc.pid


def _stop(pidfile: Path, expect: str, timeout: float = 15.0) -> bool:
    pid = _read_pid(pidfile, expect)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _read_pid(pidfile, expect) is not None:
        time.sleep(0.1)
    if _read_pid(pidfile, expect) is not None:
        os.kill(pid, signal.SIGKILL)
        while _read_pid(pidfile, expect) is not None:
            time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    return True


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def address_is_local(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- API checks

def _ssl_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def request(cp: ControlPlane, method: str, path: str, body: dict | None = None,
             timeout: float = 5.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(cp.server + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=_ssl_context(cp.state_dir / "pki"),
                                    timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _wait(cp: ControlPlane, what: str, check, timeout: float, log: Path, pidfile: Path,
          expect: str) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if _read_pid(pidfile, expect) is None:
            raise ControlPlaneError(f"{expect} exited while waiting for {what}; "
                                    f"last lines of {log}:\n{_tail(log)}")
        try:
            ok, last = check()
            if ok:
                return
        except (OSError, ssl.SSLError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.2)
    raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what} ({last}); "
                            f"last lines of {log}:\n{_tail(log)}")


def _etcd_healthy(client_port: int = ETCD_CLIENT_PORT) -> tuple[bool, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{client_port}/health", timeout=2) as resp:
        body = resp.read().decode()
    return json.loads(body).get("health") == "true", body


# ---------------------------------------------------------------- public API

def _binaries(bin_dir: Path | None) -> tuple[Path, Path]:
    if bin_dir is None:
        from lab import toolchain
        bin_dir = toolchain.ensure_built()
    binaries = tuple(bin_dir / name for name in ("etcd", "kube-apiserver", "kube-controller-manager"))
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            raise ControlPlaneError(f"{binary.name} is missing from the toolchain ({binary}); "
                                    "run `make toolchain`")
    return binaries


def status(lab_dir: Path = DEFAULT_LAB_DIR) -> dict:
    state = _state_dir(lab_dir)
    info = {"etcd": _read_pid(state / "etcd.pid", "etcd"),
            "kube-apiserver": _read_pid(state / "kube-apiserver.pid", "kube-apiserver"),
            "kube-controller-manager": _read_pid(state / "kube-controller-manager.pid",
                                                 "kube-controller-manager"),
            "kubeconfig": str(lab_dir / "kubeconfig"), "ready": False}
    try:
        address, port = (state / "address").read_text().split()
        info["server"] = ControlPlane(address, int(port), lab_dir / "kubeconfig", state).server
        if info["kube-apiserver"]:
            code, _ = request(ControlPlane(address, int(port), lab_dir / "kubeconfig", state),
                               "GET", "/readyz", timeout=2)
            info["ready"] = code == 200
    except (OSError, ValueError, ssl.SSLError, urllib.error.URLError):
        pass
    return info


def up(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT, lab_dir: Path = DEFAULT_LAB_DIR,
       bin_dir: Path | None = None, timeout: float = 120.0,
       etcd_client_port: int = ETCD_CLIENT_PORT, etcd_peer_port: int = ETCD_PEER_PORT) -> ControlPlane:
    """Start etcd and kube-apiserver unless they already run on this address; wait for /readyz and
    for namespace kube-system; write `<lab_dir>/kubeconfig`. Two control planes on one machine need
    their own lab_dir, apiserver port and etcd ports."""
    lab_dir = Path(lab_dir).resolve()  # the processes run with their state dir as cwd
    state = _state_dir(lab_dir)
    pki = state / "pki"
    cp = ControlPlane(address, port, lab_dir / "kubeconfig", state)
    ipaddress.ip_address(address)  # a bad address fails here, not in the apiserver's log

    running = status(lab_dir)
    if (running["kube-apiserver"] and running["kube-controller-manager"]
            and running.get("server") == cp.server and running["ready"]):
        write_kubeconfig(cp.kubeconfig, pki, cp.server)
        return cp
    if running["kube-apiserver"] and running.get("server") != cp.server:
        down(lab_dir)  # same etcd data, other address: restart the apiserver there

    if not address_is_local(address):
        raise ControlPlaneError(
            f"{address} is not an address of this machine: bring up the lab bridge first "
            f"(python -m lab up) or pass --address 127.0.0.1")
    etcd_bin, apiserver_bin, manager_bin = _binaries(bin_dir)
    ensure_pki(pki, address)
    (state / "address").write_text(f"{address} {port}\n")
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(state)}

    etcd_url = f"http://127.0.0.1:{etcd_client_port}"
    peer_url = f"http://127.0.0.1:{etcd_peer_port}"
    if _read_pid(state / "etcd.pid", "etcd") is None:
        _start([str(etcd_bin), "--name", "lab", "--data-dir", str(state / "etcd"),
                "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"lab={peer_url}",
                "--unsafe-no-fsync", "--log-level", "warn"],
               state / "etcd.log", state / "etcd.pid", env)
    _wait(cp, "etcd /health", lambda: _etcd_healthy(etcd_client_port), timeout, state / "etcd.log",
          state / "etcd.pid", "etcd")

    if _read_pid(state / "kube-apiserver.pid", "kube-apiserver") is None:
        _start([str(apiserver_bin),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={address}", f"--advertise-address={address}",
                f"--secure-port={port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # No endpoints for the `kubernetes` Service: nothing in the lab routes to it.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                f"--cert-dir={pki}", "--v=1"],
               state / "kube-apiserver.log", state / "kube-apiserver.pid", env)
    log, pidfile = state / "kube-apiserver.log", state / "kube-apiserver.pid"

    def ready() -> tuple[bool, str]:
        code, body = request(cp, "GET", "/readyz", timeout=3)
        return code == 200, f"/readyz {code}: {body[-300:]}"

    def kube_system() -> tuple[bool, str]:
        code, body = request(cp, "GET", "/api/v1/namespaces/kube-system")
        if code == 404:
            code, body = request(cp, "POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
        return code in (200, 201, 409), f"kube-system {code}"

    _wait(cp, "kube-apiserver /readyz", ready, timeout, log, pidfile, "kube-apiserver")
    _wait(cp, "namespace kube-system", kube_system, timeout, log, pidfile, "kube-apiserver")

    # Only the garbage collector and the namespace controller: they finish deletions (pulumi-
    # kubernetes deletes with foreground propagation, which waits for the collector).
    manager_kubeconfig = state / "controller-manager.kubeconfig"
    write_kubeconfig(manager_kubeconfig, pki, cp.server)
    if _read_pid(state / "kube-controller-manager.pid", "kube-controller-manager") is None:
        _start([str(manager_bin), f"--kubeconfig={manager_kubeconfig}",
                "--controllers=garbage-collector-controller,namespace-controller",
                "--leader-elect=false", "--use-service-account-credentials=false",
                "--secure-port=0", "--v=1"],
               state / "kube-controller-manager.log", state / "kube-controller-manager.pid", env)
    manager_log, manager_pid = state / "kube-controller-manager.log", state / "kube-controller-manager.pid"
    _wait(cp, "kube-controller-manager to start", lambda: (True, ""), timeout, manager_log,
          manager_pid, "kube-controller-manager")
    write_kubeconfig(cp.kubeconfig, pki, cp.server)
    return cp


def down(lab_dir: Path = DEFAULT_LAB_DIR, purge: bool = False) -> list[str]:
    """Stop kube-apiserver then etcd (only the processes in the pidfiles). `purge` also removes the
    etcd data, PKI and kubeconfig."""
    lab_dir = Path(lab_dir)
    state = _state_dir(lab_dir)
    stopped = [name for name in ("kube-controller-manager", "kube-apiserver", "etcd")
               if _stop(state / f"{name}.pid", name)]
    if purge:
        shutil.rmtree(state, ignore_errors=True)
        (lab_dir / "kubeconfig").unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.controlplane", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--address", default=DEFAULT_ADDRESS)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--etcd-client-port", type=int, default=ETCD_CLIENT_PORT)
    parser.add_argument("--etcd-peer-port", type=int, default=ETCD_PEER_PORT)
    parser.add_argument("--lab-dir", type=Path, default=DEFAULT_LAB_DIR)
    parser.add_argument("--purge", action="store_true", help="down: also delete etcd data and PKI")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            started = time.monotonic()
            cp = up(args.address, args.port, args.lab_dir, etcd_client_port=args.etcd_client_port,
                    etcd_peer_port=args.etcd_peer_port)
            print(f"control plane ready at {cp.server} in {time.monotonic() - started:.1f}s; "
                  f"kubeconfig {cp.kubeconfig}")
        elif args.command == "down":
            stopped = down(args.lab_dir, purge=args.purge)
            print("stopped " + (", ".join(stopped) if stopped else "nothing (not running)"))
        else:
            info = status(args.lab_dir)
            print(json.dumps(info, indent=2))
            return 0 if info["ready"] else 3
    except ControlPlaneError as e:
        print(f"controlplane: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
