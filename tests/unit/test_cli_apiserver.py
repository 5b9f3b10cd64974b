"""cli/apiserver.py: the `recover` preflight asks the apiserver the records will go through, with
the kubeconfig's credentials and trust, against a real TLS server on loopback."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cli import apiserver
from cli.common import CliError
from config import build_config
from lab import controlplane
from test_config import render


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """The lab's PKI: a CA, a serving cert for 127.0.0.1 (among others), an admin client cert."""
    path = tmp_path_factory.mktemp("pki")
    controlplane.ensure_pki(path, ["198.18.0.11"])
    return path


class Apiserver:
    """An HTTPS server that requires a client certificate of the CA and answers /readyz with the
    next code of ``codes`` (the last one repeats); records the requests' headers."""

    def __init__(self, pki: Path, codes: list[int]):
        self.codes = list(codes)
        self.seen: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.seen.append({"path": self.path, **dict(self.headers)})
                code = outer.codes.pop(0) if len(outer.codes) > 1 else outer.codes[0]
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        ctx.load_verify_locations(pki / "ca.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(pki):
    servers = []

    def start(codes=(200,)):
        server = Apiserver(pki, list(codes))
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def creds(pki: Path, tmp_path: Path, server: str = "https://198.18.0.11:6443", **cluster_extra):
    doc = yaml.safe_load(controlplane.kubeconfig_text(pki, server))
    doc["clusters"][0]["cluster"].update(cluster_extra)
    return apiserver._Credentials(yaml.safe_dump(doc), None, tmp_path)


def test_a_ready_apiserver_answers_with_the_kubeconfigs_client_certificate(serve, pki, tmp_path):
    server = serve([200])
    result = apiserver.probe(server.url, creds(pki, tmp_path))
    assert (result.ok, result.detail) == (True, "/readyz 200")
    assert server.seen[0]["path"] == "/readyz"


def test_an_apiserver_that_is_not_ready_yet_is_asked_again(serve, pki, tmp_path):
    """A 500 (its etcd member still catching up) is retried within the time bound."""
    server = serve([500, 500, 200])
    result = apiserver.probe(server.url, creds(pki, tmp_path), timeout=5)
    assert result.ok and len(server.seen) == 3


def test_an_apiserver_that_stays_unready_fails_within_the_bound(serve, pki, tmp_path):
    server = serve([500])
    start = time.monotonic()
    result = apiserver.probe(server.url, creds(pki, tmp_path), timeout=1.5)
    assert (result.ok, result.detail) == (False, "/readyz 500")
    assert time.monotonic() - start < 2.5


def test_nothing_listening_fails_at_once(pki, tmp_path):
    result = apiserver.probe(f"https://127.0.0.1:{free_port()}", creds(pki, tmp_path))
    assert not result.ok and result.detail == "Connection refused" and result.seconds < 1


def test_a_certificate_that_does_not_name_the_host_is_refused(serve, pki, tmp_path):
    """TLS is verified against the endpoint's host: 'localhost' is in the certificate, a
    tls-server-name it does not carry is not."""
    server = serve([200])
    result = apiserver.probe(server.url, creds(pki, tmp_path, **{"tls-server-name": "elsewhere.example"}))
    assert not result.ok and result.detail.startswith("TLS verification failed"), result.detail
    assert apiserver.probe(server.url, creds(pki, tmp_path, **{"tls-server-name": "localhost"})).ok


def test_a_bearer_token_is_sent(serve, pki, tmp_path):
    server = serve([200])
    doc = yaml.safe_load(controlplane.kubeconfig_text(pki, "https://198.18.0.11:6443"))
    doc["users"][0]["user"] = {"token": "t0ken", "client-certificate-data": doc["users"][0]["user"]["client-certificate-data"],
                               "client-key-data": doc["users"][0]["user"]["client-key-data"]}
    assert apiserver.probe(server.url, apiserver._Credentials(yaml.safe_dump(doc), None, tmp_path)).ok
    assert server.seen[0]["Authorization"] == "Bearer t0ken"


# -- check(): the preflight's decision --------------------------------------------------------


def session(pki: Path, tmp_path: Path, endpoints: list[str]):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(controlplane.kubeconfig_text(pki, "https://198.18.0.11:6443"))
    config = build_config(render(kubernetes__kubeconfig_path=str(kubeconfig),
                                 kubernetes__endpoints=endpoints))
    return SimpleNamespace(config=config, project_dir=tmp_path)


def test_check_returns_the_endpoint_it_will_use(serve, pki, tmp_path):
    server = serve([200])
    assert apiserver.check(session(pki, tmp_path, [server.url]), []).endpoint == server.url


def test_check_refuses_a_silent_endpoint_and_names_one_that_answers(serve, pki, tmp_path):
    """The program would use the first endpoint: when it does not answer the preflight refuses
    (exit 2) and says which other candidate does, with the command that selects it."""
    dead = f"https://127.0.0.1:{free_port()}"
    live = serve([200]).url
    with pytest.raises(CliError) as info:
        apiserver.check(session(pki, tmp_path, [dead, live]), [])
    assert info.value.code == 2
    assert info.value.message == (
        f"the apiserver the records go through, {dead}, does not answer: Connection refused; "
        f"{live} answers: list it first in kubernetes.endpoints (pulumi config set --path "
        f"'kubernetes.endpoints[0]' {live}) (nothing was changed)")


def test_check_refuses_when_no_candidate_answers(pki, tmp_path):
    dead = [f"https://127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(CliError) as info:
        apiserver.check(session(pki, tmp_path, dead), [])
    assert f"; nor does any other: {dead[1]} (Connection refused)" in info.value.message


def test_check_refuses_when_every_endpoint_is_down(pki, tmp_path):
    """down_hosts covers every endpoint: refused before anything is dialled."""
    config = build_config(render(kubernetes__kubeconfig_path=str(tmp_path / "kc"),
                                 kubernetes__endpoints=["https://198.18.0.11:6443"]))
    with pytest.raises(CliError) as info:
        apiserver.check(SimpleNamespace(config=config, project_dir=tmp_path), ["198.18.0.11"])
    assert info.value.message.startswith("error: kubernetes.endpoints: no apiserver left")


# ------------------------------------------------------------------------------ the Lease's requests


@pytest.fixture
def silent():
    """A TCP port that accepts connections and never answers (a frozen apiserver)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_request_returns_the_status_and_body(serve, pki, tmp_path):
    server = serve([200])
    status, body = apiserver.request(server.url, creds(pki, tmp_path), "GET", "/readyz")
    assert (status, body) == (200, b"ok")
    assert server.seen[0]["Accept"] == "application/json"


def test_the_lease_tries_the_next_apiserver_and_stays_on_the_one_that_answered(serve, pki,
                                                                               tmp_path, silent):
    """A refused and a silent apiserver are passed over (each bounded by the per-endpoint
    time); the next call starts with the one that answered: the silent one is not dialled
    again."""
    from cli.lease import HttpLeaseApi

    refused, live = f"https://127.0.0.1:{free_port()}", serve([200])
    api = HttpLeaseApi(creds(pki, tmp_path), lambda: [refused, silent, live.url], "l",
                       per_endpoint_s=0.3)
    start = time.monotonic()
    reply = api.get(time.monotonic() + 5)
    assert reply.status == 200 and reply.endpoint == live.url
    assert time.monotonic() - start < 2
    assert api.last_answered == live.url
    start = time.monotonic()
    assert api.get(time.monotonic() + 5).status == 200
    assert time.monotonic() - start < 0.3
    assert live.seen[-1]["path"] == "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l"


def test_a_lease_request_ends_by_its_deadline(pki, tmp_path, silent):
    from cli.lease import HttpLeaseApi

    api = HttpLeaseApi(creds(pki, tmp_path), lambda: [silent, silent], "l", per_endpoint_s=5)
    start = time.monotonic()
    reply = api.get(time.monotonic() + 0.4)
    assert reply.status == 0 and ("no time left" in reply.detail or "timed out" in reply.detail)
    assert time.monotonic() - start < 1.0


def test_a_lease_with_every_apiserver_on_down_hosts_dials_nothing(pki, tmp_path):
    from cli.lease import HttpLeaseApi

    api = HttpLeaseApi(creds(pki, tmp_path), lambda: [], "l")
    reply = api.get(time.monotonic() + 5)
    assert reply.status == 0 and "down_hosts" in reply.detail
