"""`adopt` reads the ConfigMaps through the kubeconfig (cli/adopt.py `read_configmaps_api`): a
real HTTPS server on loopback stands in for the apiserver (TLS verified against the kubeconfig's
CA, its bearer token sent); a 404 is an absent ConfigMap; no answer is "ask master0 instead"."""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from ipaddress import ip_address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cli.adopt import read_configmaps_api

CLUSTERFILE = "apiVersion: sealer.io/v2\nkind: Cluster\n"


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apiserver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "tls.crt").write_bytes(pem)
    (tmp_path / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return pem


@pytest.fixture
def apiserver(tmp_path):
    pem = self_signed(tmp_path)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization", ""))
            if self.path.endswith("/configmaps/sealer-clusterfile"):
                body = json.dumps({"kind": "ConfigMap", "data": {"Clusterfile": CLUSTERFILE}}).encode()
                self.send_response(200)
            else:
                body = b'{"kind":"Status","code":404}'
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", pem, seen
    server.shutdown()
    server.server_close()


def kubeconfig(tmp_path, server: str, ca: bytes) -> object:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server,
                                              "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}]}))
    return path


def test_the_configmaps_are_read_with_the_kubeconfigs_trust_and_token(tmp_path, apiserver):
    server, ca, seen = apiserver
    got, why = read_configmaps_api(kubeconfig(tmp_path, server, ca))
    assert (got, why) == ({"sealer-clusterfile": CLUSTERFILE, "sealer-registry": None}, "")
    assert seen == ["Bearer t0ken", "Bearer t0ken"]


def test_an_apiserver_whose_cert_the_kubeconfig_does_not_trust_is_not_used(tmp_path, apiserver):
    server, _, _ = apiserver
    (tmp_path / "other").mkdir()
    other = self_signed(tmp_path / "other")
    got, why = read_configmaps_api(kubeconfig(tmp_path, server, other))
    assert got is None and "does not answer" in why


def test_no_apiserver_means_asking_master0(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    got, why = read_configmaps_api(kubeconfig(tmp_path, f"https://127.0.0.1:{port}", b""))
    assert got is None and f"127.0.0.1:{port} does not answer" in why


def test_a_missing_kubeconfig_means_asking_master0(tmp_path):
    got, why = read_configmaps_api(tmp_path / "nope")
    assert got is None and "cannot be used" in why
