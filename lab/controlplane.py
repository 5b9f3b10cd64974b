"""The lab's Kubernetes control plane, on the masters as sealer (kubeadm) puts it.

Each master runs, inside its own namespaces (``Lab.start_service``: started like sshd, without SSH):
- an etcd member of one cluster of all masters: client ``http://<ip>:2379`` (and 127.0.0.1), peer
  ``http://<ip>:2380``, data in the host's private ``/var/lib/etcd`` (fsync off: lab data);
- a kube-apiserver on ``<ip>:6443`` (all the host's addresses) backed by its local etcd member, as
  kubeadm's stacked etcd is; TLS from a lab CA, one serving certificate whose SANs are every master
  IP, ``apiserver.cluster.local``, the lab bridge's address, 127.0.0.1 and the ``kubernetes`` names;
- a kube-controller-manager (garbage collector and namespace controller only, leader-elected:
  pulumi-kubernetes' foreground deletions wait for the collector) talking to its local apiserver.

Like sealer, each master's /etc/hosts maps ``apiserver.cluster.local`` to itself and
``/etc/kubernetes/admin.conf`` reaches ``https://apiserver.cluster.local:6443``. The root namespace,
where the operator runs pulumi, gets ``<state>/kubeconfig``: the admin credentials with master0's IP
as the server, as an operator's kubeconfig copied from master0 usually is.

Killing master0 (``Lab.kill``: packets dropped, processes frozen) kills its members; the etcd quorum
(2 of 3) holds and the apiservers of the other masters keep serving. A crash-kill's revive
restarts them (the lab's services come back with a "reboot").

CLI: ``python -m lab.controlplane up|down|status [--state-dir D] [--purge]``
(``python -m lab up --control-plane`` brings the hosts and the control plane up together).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import dataclasses
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.hosts import ETCD_PEER_PORT, GATEWAY, INSTANCE, PRIVATE_DIRS, Lab, LabError

API_PORT = 6443
API_DOMAIN = "apiserver.cluster.local"  # sealer's control-plane endpoint name
ETCD_CLIENT_PORT = 2379
SERVICE_CIDR = "10.96.0.0/24"  # only a setting: nothing routes to it
CONTEXT = "sealer-lab"
# Start order; stopped in reverse.
SERVICES = ("etcd", "kube-apiserver", "kube-controller-manager")
HOSTS_MARK = "#apiserver-set-by-lab"
ETC_KUBERNETES = "/etc/kubernetes"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


@dataclasses.dataclass(frozen=True)
class ControlPlane:
    masters: tuple[str, ...]  # IPs, master0 first
    kubeconfig: Path          # the root namespace's: server is master0
    pki: Path

    @property
    def server(self) -> str:
        return server_of(self.masters[0])


def server_of(ip: str) -> str:
    return f"https://{ip}:{API_PORT}"


def _state_dir(lab: Lab) -> Path:
    return lab.state / "controlplane"


def kubeconfig_path(lab: Lab) -> Path:
    return lab.state / "kubeconfig"


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
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False), critical=True)
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def serving_sans(masters: list[str]) -> list:
    """What the apiserver certificate names: every master IP (as kubeadm names each master's
    advertise address and sealer adds the masters to certSANs), apiserver.cluster.local, the lab
    bridge's address, loopback, the service IP and the in-cluster names."""
    ips = {ipaddress.ip_address(a) for a in (*masters, GATEWAY, "127.0.0.1", "10.96.0.1")}
    names = [API_DOMAIN, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"]
    return [x509.DNSName(n) for n in names] + [x509.IPAddress(ip) for ip in sorted(ips, key=str)]


def ensure_pki(pki: Path, masters: list[str]) -> None:
    """CA, serving cert (re-issued when its SANs differ from what the masters need), service-account
    key pair and the admin client cert. Existing material is kept so a restart keeps the
    kubeconfig valid."""
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
    wanted = serving_sans(masters)
    if serving.exists():
        have = x509.load_pem_x509_certificate(serving.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        if set(have) != set(wanted):
            serving.unlink()
    if not serving.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                      key.public_key(), ca_cert.subject, ca_key, ca=False,
                      usages=[ExtendedKeyUsageOID.SERVER_AUTH], sans=wanted)
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


def kubeconfig_text(pki: Path, server: str) -> str:
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
    return json.dumps(config, indent=2) + "\n"


# ---------------------------------------------------------------- API checks

def _ssl_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def request(cp: ControlPlane, method: str, path: str, body: dict | None = None,
            timeout: float = 5.0, server: str | None = None) -> tuple[int, str]:
    """One call with the admin credentials, to master0's apiserver unless ``server`` is given."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request((server or cp.server) + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=_ssl_context(cp.pki), timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def etcd_health(ip: str, timeout: float = 2.0) -> tuple[bool, str]:
    """The member's /health: true only while the cluster has a leader and quorum."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{ETCD_CLIENT_PORT}/health", timeout=timeout) as r:
            body = r.read().decode()
    except urllib.error.HTTPError as e:  # 503 with a reason when there is no quorum
        body = e.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as e:
        return False, str(e)
    try:
        return json.loads(body).get("health") == "true", body
    except ValueError:
        return False, body


def apiserver_ready(cp: ControlPlane, ip: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        code, body = request(cp, "GET", "/readyz", timeout=timeout, server=server_of(ip))
    except (OSError, ssl.SSLError, urllib.error.URLError) as e:
        return False, str(e)
    return code == 200, f"/readyz {code}: {body[-300:]}"


def wait_ready(cp: ControlPlane, ip: str | None = None, limit_s: float = 90.0) -> float:
    """Waits (bounded) until ``ip``'s apiserver (master0's by default) answers /readyz 200, e.g.
    after the host was revived: its etcd member and its connections to it come back first.
    Returns the seconds waited."""
    ip = ip or cp.masters[0]
    began, detail = time.monotonic(), ""
    while time.monotonic() - began < limit_s:
        ok, detail = apiserver_ready(cp, ip)
        if ok:
            return time.monotonic() - began
        time.sleep(0.5)
    raise ControlPlaneError(f"{ip}'s apiserver not ready within {limit_s:.0f}s: {detail}")


# ---------------------------------------------------------------- the masters

def _binaries(bin_dir: Path | None) -> dict[str, Path]:
    if bin_dir is None:
        from lab import toolchain
        bin_dir = toolchain.ensure_built()
    binaries = {name: Path(bin_dir) / name for name in SERVICES}
    for binary in binaries.values():
        if not os.access(binary, os.X_OK):
            raise ControlPlaneError(f"{binary.name} is missing from the toolchain ({binary}); "
                                    "run `make toolchain`")
    return binaries


def _etcd_argv(binary: Path, name: str, ip: str, cluster: str) -> list[str]:
    client, peer = f"http://{ip}:{ETCD_CLIENT_PORT}", f"http://{ip}:{ETCD_PEER_PORT}"
    return [str(binary), "--name", name, "--data-dir", "/var/lib/etcd",
            "--listen-client-urls", f"{client},http://127.0.0.1:{ETCD_CLIENT_PORT}",
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"sealer-lab-{INSTANCE}",
            "--unsafe-no-fsync", "--log-level", "warn"]


def _apiserver_argv(binary: Path, ip: str) -> list[str]:
    pki = f"{ETC_KUBERNETES}/pki"
    return [str(binary),
            f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
            "--bind-address=0.0.0.0", f"--advertise-address={ip}", f"--secure-port={API_PORT}",
            f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
            f"--client-ca-file={pki}/ca.crt",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # No endpoints for the `kubernetes` Service: nothing in the lab routes to it.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true", f"--cert-dir={pki}", "--v=1"]


def _manager_argv(binary: Path) -> list[str]:
    # Only the garbage collector and the namespace controller: they finish deletions.
    return [str(binary), f"--kubeconfig={ETC_KUBERNETES}/controller-manager.conf",
            "--controllers=garbage-collector-controller,namespace-controller",
            "--leader-elect=true", "--use-service-account-credentials=false",
            "--secure-port=0", "--v=1"]


def _private_etcd_dir(lab: Lab, ip: str) -> Path:
    """The host's /var/lib/etcd as the root namespace sees it, after checking that it is the
    host's private directory (never the machine's own /var/lib/etcd)."""
    name = lab.host(ip).name
    private = lab.hosts_dir / name / PRIVATE_DIRS["/var/lib/etcd"]
    seen = lab.host_path(ip, "/var/lib/etcd")
    try:
        same = os.path.samestat(os.stat(private), os.stat(seen))
    except OSError:
        same = False
    if not same:
        raise ControlPlaneError(f"{name}'s /var/lib/etcd is not its private {private}: recreate "
                                "the host (`python -m lab down`, then `up`)")
    return private


def _empty(directory: Path) -> None:
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _set_hosts_line(path: Path, ip: str) -> None:
    """``<ip> apiserver.cluster.local`` in the host's /etc/hosts, any earlier line for the name
    replaced; the file is rewritten in place (its inode kept)."""
    lines = [line for line in path.read_text().splitlines()
             if API_DOMAIN not in line.split("#", 1)[0].split()[1:]]
    lines.append(f"{ip} {API_DOMAIN} {HOSTS_MARK}")
    with open(path, "r+") as f:
        f.write("\n".join(lines) + "\n")
        f.truncate()


def _install(lab: Lab, ip: str, pki: Path) -> None:
    """The master's /etc/kubernetes (pki, admin.conf, controller-manager.conf), its /etc/hosts
    line and an empty /var/lib/etcd."""
    _empty(_private_etcd_dir(lab, ip))
    etc = lab.host_path(ip, ETC_KUBERNETES)
    (etc / "pki").mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "apiserver.crt", "sa.pub"):
        (etc / "pki" / name).write_bytes((pki / name).read_bytes())
    for name in ("apiserver.key", "sa.key"):
        _write_private(etc / "pki" / name, (pki / name).read_bytes())
    _write_private(etc / "admin.conf", kubeconfig_text(pki, f"https://{API_DOMAIN}:{API_PORT}").encode())
    _write_private(etc / "controller-manager.conf", kubeconfig_text(pki, server_of(ip)).encode())
    _set_hosts_line(lab.host_path(ip, "/etc/hosts"), ip)


def _wait(what: str, check, timeout: float, lab: Lab, ip: str, service: str) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if lab.service_pid(ip, service) is None:
            raise ControlPlaneError(f"{service} on {ip} exited while waiting for {what}; last lines "
                                    f"of {lab.service_log(ip, service)}:\n{_tail(lab.service_log(ip, service))}")
        try:
            ok, last = check()
        except (OSError, ssl.SSLError, urllib.error.URLError) as e:
            ok, last = False, str(e)
        if ok:
            return
        time.sleep(0.2)
    raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what} ({last}); last "
                            f"lines of {lab.service_log(ip, service)}:\n{_tail(lab.service_log(ip, service))}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _parallel(fn, items) -> list:
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(fn, items))


# ---------------------------------------------------------------- public API

def status(lab: Lab) -> dict:
    """Per master: pids of the three services, etcd health and apiserver readiness."""
    pki = _state_dir(lab) / "pki"
    masters = [h.ip for h in lab.masters()]
    info: dict = {"kubeconfig": str(kubeconfig_path(lab)), "masters": {}, "ready": False}
    if not masters:
        return info
    cp = ControlPlane(tuple(masters), kubeconfig_path(lab), pki)
    info["server"] = cp.server
    for ip in masters:
        row = {name: lab.service_pid(ip, name) for name in SERVICES}
        row["killed"] = lab.is_killed(ip)
        row["etcd_healthy"] = (not row["killed"] and row["etcd"] is not None
                               and etcd_health(ip, timeout=1)[0])
        row["apiserver_ready"] = (not row["killed"] and row["kube-apiserver"] is not None
                                  and (pki / "ca.crt").exists() and apiserver_ready(cp, ip, timeout=2)[0])
        info["masters"][ip] = row
    info["ready"] = all(r["etcd_healthy"] and r["apiserver_ready"] and r["kube-controller-manager"]
                        for r in info["masters"].values())
    return info


def attach(lab: Lab) -> ControlPlane:
    """The lab's control plane as ``up`` made it, without starting or checking anything (a
    master may be killed: ``wait_ready`` on a live one)."""
    return ControlPlane(tuple(h.ip for h in lab.masters()), kubeconfig_path(lab),
                        _state_dir(lab) / "pki")


def up(lab: Lab, bin_dir: Path | None = None, timeout: float = 180.0) -> ControlPlane:
    """Start the control plane on the lab's masters unless it already serves on all of them; wait
    for etcd health, every apiserver's /readyz and namespace kube-system; write the root
    namespace's kubeconfig. A partial control plane is restarted from empty etcd data."""
    masters = lab.masters()
    if not masters:
        raise ControlPlaneError("the lab has no master: `python -m lab up --masters 3` first")
    killed = [h.name for h in masters if lab.is_killed(h.name)]
    if killed:
        raise ControlPlaneError(f"master(s) {', '.join(killed)} are killed: revive them first")
    ips = [h.ip for h in masters]
    pki = _state_dir(lab) / "pki"
    cp = ControlPlane(tuple(ips), kubeconfig_path(lab), pki)
    ensure_pki(pki, ips)
    current = status(lab)
    if current["ready"] and all(
            lab.host_path(ip, f"{ETC_KUBERNETES}/pki/apiserver.crt").read_bytes()
            == (pki / "apiserver.crt").read_bytes() for ip in ips):
        _write_private(cp.kubeconfig, kubeconfig_text(pki, cp.server).encode())
        return cp

    binaries = _binaries(bin_dir)
    down(lab)
    cluster = ",".join(f"{h.name}=http://{h.ip}:{ETCD_PEER_PORT}" for h in masters)
    _parallel(lambda ip: _install(lab, ip, pki), ips)

    for h in masters:
        lab.start_service(h.ip, "etcd", _etcd_argv(binaries["etcd"], h.name, h.ip, cluster))
    _parallel(lambda ip: _wait("etcd /health", lambda: etcd_health(ip), timeout, lab, ip, "etcd"), ips)

    for ip in ips:
        lab.start_service(ip, "kube-apiserver", _apiserver_argv(binaries["kube-apiserver"], ip))
    _parallel(lambda ip: _wait("kube-apiserver /readyz", lambda: apiserver_ready(cp, ip), timeout,
                               lab, ip, "kube-apiserver"), ips)

    def kube_system() -> tuple[bool, str]:
        code, _ = request(cp, "GET", "/api/v1/namespaces/kube-system")
        if code == 404:
            code, _ = request(cp, "POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
        return code in (200, 201, 409), f"kube-system {code}"
    _wait("namespace kube-system", kube_system, timeout, lab, ips[0], "kube-apiserver")

    for ip in ips:
        lab.start_service(ip, "kube-controller-manager",
                          _manager_argv(binaries["kube-controller-manager"]))
    _write_private(cp.kubeconfig, kubeconfig_text(pki, cp.server).encode())
    return cp


def down(lab: Lab, purge: bool = False) -> list[str]:
    """Stop the services on every master (the lab's hosts stay) and forget them. ``purge`` also
    empties the masters' /var/lib/etcd and removes the PKI and the kubeconfig."""
    stopped = []
    try:
        masters = lab.masters()
    except LabError:
        masters = []
    for h in masters:
        for name in reversed(SERVICES):
            if lab.stop_service(h.ip, name, forget=True):
                stopped.append(f"{name}@{h.ip}")
        if purge:
            _empty(lab.hosts_dir / h.name / PRIVATE_DIRS["/var/lib/etcd"])
    if purge:
        shutil.rmtree(_state_dir(lab), ignore_errors=True)
        kubeconfig_path(lab).unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.controlplane",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", help="lab state directory (default <repo>/.lab, env SEALER_LAB_DIR)")
    parser.add_argument("--purge", action="store_true", help="down: also delete etcd data and PKI")
    args = parser.parse_args(argv)
    lab = Lab(args.state_dir)
    try:
        if args.command == "up":
            started = time.monotonic()
            cp = up(lab)
            print(f"control plane ready on {', '.join(cp.masters)} in "
                  f"{time.monotonic() - started:.1f}s; kubeconfig {cp.kubeconfig} ({cp.server})")
        elif args.command == "down":
            stopped = down(lab, purge=args.purge)
            print("stopped " + (", ".join(stopped) if stopped else "nothing (not running)"))
        else:
            info = status(lab)
            print(json.dumps(info, indent=2))
            return 0 if info["ready"] else 3
    except (ControlPlaneError, LabError) as e:
        print(f"controlplane: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
