"""Does the apiserver the program will write the records through answer? (`recover` preflight)

``kubeapi.choose`` picks the endpoint offline; this module asks it ``GET /readyz`` with the
kubeconfig's own credentials and trust (client certificate or token, its CA, its
``tls-server-name``), bounded in time, and says which endpoint it is. When it does not answer, the
other candidates are asked too so that the refusal can name one that does.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

import kubeapi
from cli.common import CliError, resolve_local_path
from cli.session import Session
from config import ConfigError

PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ApiProbe:
    endpoint: str
    ok: bool
    detail: str      # "/readyz 200" or why not
    seconds: float


class _Credentials:
    """The TLS context and headers of the kubeconfig's context (files resolved against the
    kubeconfig's directory, inline data written to a private temp dir for the ssl module)."""

    def __init__(self, kubeconfig: str, context: str | None, base_dir: Path):
        doc = yaml.safe_load(kubeconfig)
        name = context or doc.get("current-context")
        ctx = next((c.get("context") or {} for c in doc.get("contexts") or []
                    if isinstance(c, dict) and c.get("name") == name), {})
        cluster = next((c.get("cluster") or {} for c in doc.get("clusters") or []
                        if isinstance(c, dict) and c.get("name") == ctx.get("cluster")), {})
        user = next((u.get("user") or {} for u in doc.get("users") or []
                     if isinstance(u, dict) and u.get("name") == ctx.get("user")), {})
        self.server_name = cluster.get("tls-server-name")
        self.headers: dict[str, str] = {}
        self.note = ""
        with tempfile.TemporaryDirectory(prefix="sealer-kube-") as tmp:
            def material(data_key: str, file_key: str, source: dict, name: str) -> str | None:
                if source.get(data_key):
                    path = Path(tmp, name)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(base64.b64decode(source[data_key]))
                    return str(path)
                if source.get(file_key):
                    path = Path(source[file_key]).expanduser()
                    return str(path if path.is_absolute() else base_dir / path)
                return None

            if cluster.get("insecure-skip-tls-verify"):
                self.context = ssl.create_default_context()
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
            else:
                ca = material("certificate-authority-data", "certificate-authority", cluster, "ca.crt")
                self.context = ssl.create_default_context(cafile=ca)
            cert = material("client-certificate-data", "client-certificate", user, "client.crt")
            key = material("client-key-data", "client-key", user, "client.key")
            if cert and key:
                self.context.load_cert_chain(cert, key)
        token = user.get("token")
        if not token and user.get("tokenFile"):
            path = Path(user["tokenFile"]).expanduser()
            token = (path if path.is_absolute() else base_dir / path).read_text().strip()
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif not (user.get("client-certificate-data") or user.get("client-certificate")):
            if user.get("exec") or user.get("auth-provider"):
                self.note = " (asked anonymously: the kubeconfig's user runs a credential plugin)"


def probe(endpoint: str, creds: _Credentials, timeout: float = PROBE_TIMEOUT_S) -> ApiProbe:
    """``GET <endpoint>/readyz`` until it answers 200, within ``timeout`` seconds in all. An
    apiserver that answers but is not ready yet (its etcd member catching up after a revive) is
    asked again; one that does not answer at all is not."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        ok, detail, answered = _readyz(endpoint, creds, deadline)
        if ok or not answered or deadline - time.monotonic() < 0.5:
            return ApiProbe(endpoint, ok, detail + ("" if ok else creds.note),
                            time.monotonic() - start)
        time.sleep(0.3)


def _readyz(endpoint: str, creds: _Credentials, deadline: float) -> tuple[bool, str, bool]:
    """One request over one TLS connection: (ready, what happened, the server answered HTTP)."""
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or 443

    def left() -> float:
        return max(0.05, deadline - time.monotonic())
    try:
        with socket.create_connection((host, port), timeout=left()) as raw:
            with creds.context.wrap_socket(raw, server_hostname=creds.server_name or host) as tls:
                lines = [f"GET {url.path}/readyz HTTP/1.1", f"Host: {url.netloc}",
                         "User-Agent: sealer-registry-cli", "Connection: close",
                         *(f"{k}: {v}" for k, v in creds.headers.items())]
                tls.settimeout(left())
                tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
                reply = b""
                while b"\r\n" not in reply and len(reply) < 4096:
                    tls.settimeout(left())
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
    except ssl.SSLCertVerificationError as e:
        return False, f"TLS verification failed: {e.verify_message}", False
    except (TimeoutError, socket.timeout):
        return False, "no answer in time", False
    except (OSError, ssl.SSLError) as e:
        return False, getattr(e, "strerror", None) or str(e) or type(e).__name__, False
    status = reply.split(b"\r\n", 1)[0].decode(errors="replace").split()
    code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
    if not code:
        return False, "no HTTP answer", False
    return code == 200, f"/readyz {code}", True


def request(endpoint: str, creds: _Credentials, method: str, path: str,
            body: bytes | None = None, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, bytes]:
    """One API request over one TLS connection with the kubeconfig's credentials and trust:
    (status, body). Each socket operation is bounded by ``timeout``; OSError, ssl.SSLError or
    http.client.HTTPException when the server does not answer."""
    url = urlsplit(endpoint)
    raw = socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout)
    try:
        tls = creds.context.wrap_socket(raw, server_hostname=creds.server_name or url.hostname)
    except BaseException:
        raw.close()
        raise
    conn = http.client.HTTPConnection(url.hostname or "", url.port or 443, timeout=timeout)
    conn.sock = tls
    try:
        headers = {"Accept": "application/json", "User-Agent": "sealer-registry-cli",
                   **creds.headers}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, f"{url.path.rstrip('/')}{path}", body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    except BaseException:
        # A server that stopped answering mid-request (a master killed): abort with one RST
        # instead of a FIN the kernel would retransmit to the dead host for minutes.
        try:
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        raise
    finally:
        conn.close()


def kubeconfig_text(session: Session) -> tuple[str, Path]:
    """The operator's kubeconfig as the program reads it, and the directory its relative file
    names are relative to."""
    k8s = session.config.kubernetes
    if k8s.kubeconfig is not None:
        return session.engine.get_value("kubernetes.kubeconfig"), session.project_dir
    path = resolve_local_path(k8s.kubeconfig_path, session.project_dir)
    try:
        return path.read_text(), path.parent
    except OSError as e:
        raise CliError(f"cannot read the kubeconfig {path}: {e.strerror}") from None


def check(session: Session, down_hosts: list[str], master0: str | None = None) -> ApiProbe:
    """The endpoint the program will use once ``down_hosts`` (and ``master0``) are set must
    answer; CliError (exit 2, nothing changed) otherwise, naming a candidate that does answer
    when there is one."""
    config = session.config
    try:
        endpoint = kubeapi.choose(config, down_hosts, master0)
    except ConfigError as e:  # every candidate is down
        raise CliError("\n".join(e.lines())) from None
    text, base = kubeconfig_text(session)
    try:
        kubeapi.current_server(text, config.kubernetes.context or None)
        creds = _Credentials(text, config.kubernetes.context or None, base)
    except (ValueError, OSError, ssl.SSLError, yaml.YAMLError) as e:
        raise CliError(f"the kubeconfig cannot be used: {e}") from None
    first = probe(endpoint, creds)
    if first.ok:
        return first
    others = [probe(url, creds) for url in kubeapi.config_candidates(config, down_hosts, master0)[1:]]
    live = [p.endpoint for p in others if p.ok]
    if live:
        hint = (f"; {live[0]} answers: list it first in kubernetes.endpoints "
                f"(pulumi config set --path 'kubernetes.endpoints[0]' {live[0]})")
    elif others:
        hint = "; nor does any other: " + ", ".join(f"{p.endpoint} ({p.detail})" for p in others)
    else:
        hint = "; it is the only candidate (kubernetes.endpoints lists the apiservers to try)"
    raise CliError(f"the apiserver the records go through, {endpoint}, does not answer: "
                   f"{first.detail}{hint} (nothing was changed)")
