"""The lab's S3-compatible state store: Versity S3 Gateway (versitygw, Apache-2.0, built by
lab/toolchain/gotool.sh from the Go module proxy) serving a bucket from a POSIX directory, on a lab
host of its own, which operators and watchers reach over the bridge as a team reaches its object
store (Pulumi's DIY ``s3://`` backend: gocloud.dev's s3blob on the AWS SDK for Go v2).

Why versitygw: an S3 server that a team would run in production (a gateway to a POSIX file
system), built from a pinned module version, with no container engine and no external service;
Debian packages none (its ``radosgw`` needs a Ceph cluster behind it).

Why a host of its own (``<prefix>s3``, 198.18.<instance>.6), as lab/postgres.py: the tests kill
masters and cut nodes off; a team keeps its state outside the cluster whose failure it must
survive. The host is a network namespace with its own address and veth on the lab bridge.

The server: ``versitygw --port ADDRESS:PORT --cert --key --region posix <dir>`` run by root in the
host's network namespace, TLS with a CA of the lab's own (clients trust it through AWS_CA_BUNDLE,
which both the AWS SDK for Go v2 and boto3 read), one root account. Its access key and secret are
generated once into ``<lab state>/s3/credentials`` (an AWS shared credentials file, mode 0600,
profile ``sealer-lab``), reach the server in its environment (ROOT_ACCESS_KEY_ID /
ROOT_SECRET_ACCESS_KEY, never argv: versitygw v1.8.0 takes its root keys from a flag or those
variables only, cmd/versitygw/main.go, no file; the environment of a root process is readable by
root alone; a lab-only key, never a cluster's secret) and the clients through
AWS_SHARED_CREDENTIALS_FILE and the URL's ``profile=``: the backend URL itself holds no secret,
so printing it is fine.

`Lab.down` stops the server and removes the host and ``<lab state>/s3``.
"""
from __future__ import annotations

import argparse
import configparser
import dataclasses
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

from lab import tls
from lab.hosts import (INSTANCE, PREFIX, LabError, _alive, _signal, _wait, ensure_service_host,
                       remove_service_host)

HOST = f"{PREFIX}s3"
ADDRESS = f"198.18.{INSTANCE}.6"
PORT = 7070
BUCKET = "pulumi-state"
PROFILE = "sealer-lab"
REGION = "us-east-1"
ACCESS_KEY_ID = "SEALERLAB"
DIRNAME = "s3"                  # <lab state>/s3
_START_TIMEOUT_S = 20
_STOP_TIMEOUT_S = 10


@dataclasses.dataclass
class S3Store:
    """A running S3 store and how Pulumi and boto3 reach it."""

    address: str
    port: int
    bucket: str
    ca_file: Path           # the lab's CA for the server certificate (AWS_CA_BUNDLE)
    credentials: Path       # AWS shared credentials file, profile PROFILE (mode 0600)
    pid: int
    version: str

    @property
    def endpoint(self) -> str:
        return f"https://{self.address}:{self.port}"

    def backend_url(self, prefix: str = "") -> str:
        """PULUMI_BACKEND_URL: the bucket (and a key prefix), the endpoint, path-style addressing
        (the gateway serves no per-bucket host names), the region and the credentials' profile.
        No secret in it."""
        query = {"endpoint": self.endpoint, "use_path_style": "true", "region": REGION,
                 "profile": PROFILE}
        path = prefix.strip("/")
        return f"s3://{self.bucket}{'/' + path if path else ''}?{urlencode(query, safe=':/')}"

    def env(self, prefix: str = "") -> dict[str, str]:
        """What an engine or boto3 process needs beside its own environment: the URL, where the
        credentials file is, the CA. AWS_CONFIG_FILE points at nothing so that a stray
        ~/.aws/config cannot change the profile's settings."""
        return {"PULUMI_BACKEND_URL": self.backend_url(prefix),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials),
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_CA_BUNDLE": str(self.ca_file),
                "AWS_EC2_METADATA_DISABLED": "true"}


@dataclasses.dataclass(frozen=True)
class _Paths:
    state: Path         # <lab state>/s3 (root only)

    ca_file = property(lambda self: self.state / "ca.crt")
    ca_key = property(lambda self: self.state / "ca.key")
    credentials = property(lambda self: self.state / "credentials")
    cert = property(lambda self: self.state / "server.crt")
    key = property(lambda self: self.state / "server.key")
    data = property(lambda self: self.state / "data")
    log = property(lambda self: self.state / "versitygw.log")
    pidfile = property(lambda self: self.state / "versitygw.pid")


def _paths(lab) -> _Paths:
    state = getattr(lab, "state", lab)
    return _Paths(Path(state).resolve() / DIRNAME)


def _secret(p: _Paths) -> str:
    """The root account's secret, made once: the credentials file's profile."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(p.credentials.read_text())
        section = parser[PROFILE]
        if section.get("aws_access_key_id") == ACCESS_KEY_ID and section.get("aws_secret_access_key"):
            os.chmod(p.credentials, 0o600)
            return section["aws_secret_access_key"]
    except (OSError, KeyError, configparser.Error):
        pass
    secret = secrets.token_urlsafe(30)
    tls.write_private(p.credentials, f"[{PROFILE}]\naws_access_key_id = {ACCESS_KEY_ID}\n"
                                  f"aws_secret_access_key = {secret}\n")
    return secret


def _ensure_tls(p: _Paths) -> None:
    """The lab's own CA for the store and the server's certificate for ADDRESS."""
    if not (p.ca_file.exists() and p.ca_key.exists()):
        cert, key = tls.make_ca("sealer-registry lab S3 store CA")
        tls.write_private(p.ca_key, key)
        p.ca_file.write_bytes(cert)
        p.cert.unlink(missing_ok=True)
    if p.cert.exists() and p.key.exists():
        return
    cert, key = tls.issue_server(p.ca_file.read_bytes(), p.ca_key.read_bytes(), ADDRESS, {ADDRESS})
    tls.write_private(p.key, key)
    p.cert.write_bytes(cert)


def _binary() -> Path:
    from lab import toolchain
    why = toolchain.versitygw_missing()
    if why:
        raise LabError(why)
    return toolchain.versitygw_bin_dir() / "versitygw"


def version() -> str:
    from lab import toolchain
    return toolchain.gotool_version("versitygw")


def _server_pid(p: _Paths) -> int | None:
    try:
        pid = int(p.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None
    return pid if exe == "versitygw" and _alive(pid) else None


def _in_host_netns(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{HOST}").st_ino
    except OSError:
        return False


def ready(ca_file: Path | None = None, timeout: float = 3) -> bool:
    """The server completes a TLS handshake on ADDRESS:PORT with a certificate the lab's CA
    signed for ADDRESS (from the root namespace, over the bridge)."""
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with socket.create_connection((ADDRESS, PORT), timeout=timeout) as raw:
            if context is None:
                return True
            with context.wrap_socket(raw, server_hostname=ADDRESS):
                return True
    except (OSError, ssl.SSLError):
        return False


def _start(p: _Paths, secret: str) -> int:
    binary = _binary()
    p.data.mkdir(mode=0o700, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "ROOT_ACCESS_KEY_ID": ACCESS_KEY_ID, "ROOT_SECRET_ACCESS_KEY": secret}
    argv = ["nsenter", f"--net=/run/netns/{HOST}", "--", str(binary),
            "--port", f"{ADDRESS}:{PORT}", "--cert", str(p.cert), "--key", str(p.key),
            "--region", REGION, "--quiet", "posix", str(p.data)]
    with open(p.log, "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd="/")
    p.pidfile.write_text(f"{proc.pid}\n")
    if not _wait(lambda: proc.poll() is None and ready(p.ca_file), _START_TIMEOUT_S,
                 "the S3 store", raise_=False):
        tail = p.log.read_text(errors="replace")[-2000:] if p.log.exists() else ""
        _stop_server(p)
        raise LabError(f"versitygw did not come up on {ADDRESS}:{PORT}: {tail}")
    return proc.pid


def _stop_server(p: _Paths) -> bool:
    """SIGTERM, bounded; SIGKILL if it does not stop in time. True if one ran."""
    pid = _server_pid(p)
    if pid is None:
        return False
    _signal(pid, 15)
    if not _wait(lambda: not _alive(pid), _STOP_TIMEOUT_S, "versitygw to stop", raise_=False):
        _signal(pid, 9)
        _wait(lambda: not _alive(pid), 5, "versitygw to die")
    p.pidfile.unlink(missing_ok=True)
    return True


def client(store: S3Store):
    """A boto3 S3 client of the store's root account (the lab's own checks and the bucket)."""
    import boto3
    from botocore.config import Config
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(store.credentials.read_text())
    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY_ID,
                                    aws_secret_access_key=parser[PROFILE]["aws_secret_access_key"])
    return session.client("s3", endpoint_url=store.endpoint, region_name=REGION,
                          verify=str(store.ca_file),
                          config=Config(s3={"addressing_style": "path"}, connect_timeout=5,
                                        read_timeout=30, retries={"max_attempts": 2}))


def _ensure_bucket(store: S3Store) -> None:
    from botocore.exceptions import ClientError
    s3 = client(store)
    try:
        s3.head_bucket(Bucket=store.bucket)
    except ClientError:
        s3.create_bucket(Bucket=store.bucket)


def up(lab) -> S3Store:
    """Start (or keep) the S3 store and its bucket; ``lab`` is a Lab or its state dir. Idempotent:
    a server that runs in the host and answers is left alone. Needs the lab's bridge."""
    p = _paths(lab)
    p.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = _secret(p)
    ensure_service_host(HOST, ADDRESS)
    _ensure_tls(p)
    pid = _server_pid(p)
    if pid is not None and not (_in_host_netns(pid) and ready(p.ca_file)):
        _stop_server(p)   # a server of an earlier namespace, or one that stopped answering
        pid = None
    if pid is None:
        pid = _start(p, secret)
    store = S3Store(address=ADDRESS, port=PORT, bucket=BUCKET, ca_file=p.ca_file,
                    credentials=p.credentials, pid=pid, version=version())
    _ensure_bucket(store)
    return store


def stop(lab, clean: bool = False) -> bool:
    """Stop the server (True if one ran). ``clean`` (Lab.down) also removes the host and
    ``<lab state>/s3`` (the bucket's data, the credentials, the CA)."""
    p = _paths(lab)
    stopped = _stop_server(p)
    if clean:
        if remove_service_host(HOST):
            stopped = True
        shutil.rmtree(p.state, ignore_errors=True)
    return stopped


def status(lab) -> dict:
    p = _paths(lab)
    pid = _server_pid(p)
    return {"host": HOST, "address": f"{ADDRESS}:{PORT}", "running": pid is not None, "pid": pid,
            "ready": ready(p.ca_file) if pid is not None else False, "data": str(p.data),
            "log": str(p.log), "version": version()}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("action", choices=("up", "down", "status"))


def main(a: argparse.Namespace, lab) -> dict:
    """up: where the state lives, PULUMI_BACKEND_URL and the environment (no secret in either)."""
    if a.action == "up":
        t0 = time.monotonic()
        store = up(lab)
        return {"backend_url": store.backend_url(), "env": store.env(), "host": HOST,
                "pid": store.pid, "version": store.version,
                "seconds": round(time.monotonic() - t0, 2)}
    if a.action == "down":
        return {"stopped": stop(lab, clean=True)}
    return status(lab)
