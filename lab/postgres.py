"""The lab's shared Pulumi state: a real PostgreSQL server (Debian's `postgresql` package) on a lab
host of its own, which every watcher and operator process of the lab reaches over the bridge as a
team reaches its state database (Pulumi's DIY `postgres://` backend, Pulumi >= 3.176).

Why a host of its own (`<prefix>db`, 198.18.<instance>.5) rather than a master or a node: the tests
kill masters (master0, then the new master0) and cut nodes off the network, and a team keeps its
state outside the cluster whose failure it must survive; a state database on a cluster host would
die with it and take every watcher's engine down. The host is a network namespace with its own
address and veth on the lab bridge, and nothing else (no sshd, no containerd: nobody logs in).

The server: `initdb` into a lab-owned directory (`/var/lib/postgresql/sealer-lab<instance>/`,
owned by the `postgres` user, which can't traverse a root-only lab state dir), run as `postgres`
by `pg_ctl` inside the host's network namespace, listening on the host's address only. TLS with a
CA of the lab's own (the URL says `sslmode=verify-full`), SCRAM-SHA-256 password auth for the one
role `pulumi` that owns the database `pulumi` (Pulumi creates its table `pulumi_state` there);
the superuser `postgres` is reachable only through the Unix socket (peer auth).

The password never travels in argv, logs or output: it is generated once into
`<lab state>/postgres/pgpass` (a .pgpass line, mode 0600) that the backend URL names
(`passfile=`), and the server receives only its SCRAM verifier (computed here), never the
password. The URL itself holds no secret, so printing it is fine.

`Lab.down` stops the server and removes its directory, the host and the password file.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import glob
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from lab import tls
from lab.hosts import (INSTANCE, PREFIX, SUBNET, LabError, _alive, _signal, _wait,
                       ensure_service_host, remove_service_host, sh)

HOST = f"{PREFIX}db"            # the network namespace and its veth on the bridge
ADDRESS = f"198.18.{INSTANCE}.5"
PORT = 5432
DATABASE = "pulumi"
ROLE = "pulumi"
TABLE = "pulumi_state"          # Pulumi's default table name
SERVER_DIR = Path(f"/var/lib/postgresql/sealer-lab{INSTANCE}")
SOCKET_DIR = SERVER_DIR / "run"
DIRNAME = "postgres"            # <lab state>/postgres: the password file and the CA
PACKAGES = ("postgresql", "postgresql-15", "postgresql-common")
SCRAM_ITERATIONS = 4096
_START_TIMEOUT_S = 30
_STOP_TIMEOUT_S = 20


@dataclasses.dataclass
class StateDb:
    """A running state database and how Pulumi reaches it."""

    address: str
    port: int
    database: str
    user: str
    ca_file: Path       # the lab's CA for the server certificate (sslrootcert)
    passfile: Path      # .pgpass line for the role (mode 0600); the password is only there
    pid: int            # the postmaster
    versions: dict      # Debian package -> version

    def backend_url(self, table: str = TABLE) -> str:
        """PULUMI_BACKEND_URL: no password in it (lib/pq reads `passfile`)."""
        query = {"sslmode": "verify-full", "sslrootcert": str(self.ca_file),
                 "passfile": str(self.passfile), "connect_timeout": "5"}
        if table != TABLE:
            query["table"] = table
        return (f"postgres://{quote(self.user)}@{self.address}:{self.port}/{self.database}?"
                f"{urlencode(query)}")

    def env(self) -> dict[str, str]:
        return {"PULUMI_BACKEND_URL": self.backend_url()}


@dataclasses.dataclass(frozen=True)
class _Paths:
    state: Path         # <lab state>/postgres (root only)

    ca_file = property(lambda self: self.state / "ca.crt")
    ca_key = property(lambda self: self.state / "ca.key")
    passfile = property(lambda self: self.state / "pgpass")
    data = property(lambda self: SERVER_DIR / "data")
    socket_dir = property(lambda self: SOCKET_DIR)
    tls_dir = property(lambda self: SERVER_DIR / "tls")
    log = property(lambda self: SERVER_DIR / "postgres.log")


def _paths(lab) -> _Paths:
    state = getattr(lab, "state", lab)
    return _Paths(Path(state).resolve() / DIRNAME)


# ------------------------------------------------------------------------------ package


def bin_dir() -> Path:
    """The newest installed server's bin dir (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise LabError("PostgreSQL is not installed: `make setup` (apt-get install postgresql)")
    return Path(found[-1]).parent


def package_versions() -> dict[str, str]:
    out = sh("dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *PACKAGES, check=False).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line and
                not line.endswith(" "))


# ------------------------------------------------------------------------------ secrets


def scram_verifier(password: str, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq's
    PQencryptPasswordConn makes it): given to CREATE/ALTER ROLE ... PASSWORD, the server never
    sees the password itself. ASCII passwords only (SASLprep is then the identity)."""
    if not password.isascii():
        raise ValueError("scram_verifier: ASCII passwords only")
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _password(p: _Paths) -> str:
    """The role's password, made once: the fifth field of the pgpass line."""
    try:
        line = p.passfile.read_text().strip()
        fields = line.split(":")
        if len(fields) == 5 and fields[:4] == [ADDRESS, str(PORT), DATABASE, ROLE] and fields[4]:
            os.chmod(p.passfile, 0o600)
            return fields[4]
    except OSError:
        pass
    password = secrets.token_urlsafe(24)  # no ':' or '\\': a .pgpass field as is
    tls.write_private(p.passfile, f"{ADDRESS}:{PORT}:{DATABASE}:{ROLE}:{password}\n")
    return password


# ------------------------------------------------------------------------------ TLS


def _ensure_tls(p: _Paths, uid: int, gid: int) -> None:
    """The lab's own CA (in the lab state) and the server's certificate for ADDRESS (in the
    server dir, its key readable by `postgres` only)."""
    crt, key_path = p.tls_dir / "server.crt", p.tls_dir / "server.key"
    if not (p.ca_file.exists() and p.ca_key.exists()):
        cert, key = tls.make_ca("sealer-registry lab state-db CA")
        tls.write_private(p.ca_key, key)
        p.ca_file.write_bytes(cert)
        crt.unlink(missing_ok=True)
    if crt.exists() and key_path.exists():
        return
    cert, key = tls.issue_server(p.ca_file.read_bytes(), p.ca_key.read_bytes(), ADDRESS, {ADDRESS})
    p.tls_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(p.tls_dir, uid, gid)
    tls.write_private(key_path, key)
    os.chown(key_path, uid, gid)
    crt.write_bytes(cert)
    os.chown(crt, uid, gid)


# ------------------------------------------------------------------------------ the host


def _ensure_host() -> None:
    ensure_service_host(HOST, ADDRESS)


def remove_host() -> bool:
    return remove_service_host(HOST)


# ------------------------------------------------------------------------------ the server


def _postgres_ids() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise LabError("no `postgres` user: install Debian's postgresql package (`make setup`)") from None
    return pw.pw_uid, pw.pw_gid


def _as_postgres(*argv: str, input: str | None = None, timeout: float = 60,
                 netns: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    """Run argv as `postgres` (in the db host's network namespace when `netns`), clean env."""
    prefix = ["nsenter", f"--net=/run/netns/{HOST}", "--"] if netns else []
    full = [*prefix, "runuser", "-u", "postgres", "--", "env", "-i", "-C", "/",
            "PATH=/usr/bin:/bin", "LANG=C.UTF-8", *argv]
    return sh(*full, input=input, timeout=timeout, check=check)


SERVER_CONF = """\
# sealer-registry lab state database, generated by lab/postgres.py
listen_addresses = '{address}'
port = {port}
unix_socket_directories = '{socket_dir}'
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = '{tls_dir}/server.crt'
ssl_key_file = '{tls_dir}/server.key'
ssl_min_protocol_version = 'TLSv1.2'
max_connections = 50
shared_buffers = 32MB
log_connections = on
log_line_prefix = '%m [%p] %q%u@%d %r '
"""

HBA_CONF = """\
# sealer-registry lab state database, generated by lab/postgres.py
# TYPE   DATABASE  USER      ADDRESS       METHOD
local    all       postgres                peer
hostssl  {db}      {role}    {subnet}      scram-sha-256
"""


def _initdb(p: _Paths, uid: int, gid: int) -> None:
    """A new cluster in SERVER_DIR/data (kept when it holds one already)."""
    SERVER_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(SERVER_DIR, uid, gid)
    for d in (p.socket_dir,):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, uid, gid)
    if not (p.data / "PG_VERSION").exists():
        if p.data.exists():
            shutil.rmtree(p.data)  # a half-made one
        _as_postgres(str(bin_dir() / "initdb"), "-D", str(p.data), "-U", "postgres",
                     "--auth-local=peer", "--auth-host=reject", "-E", "UTF8",
                     "--locale=C.UTF-8", timeout=120)
    conf = p.data / "postgresql.conf"
    include = "include = 'sealer-lab.conf'\n"
    if include not in conf.read_text():
        with open(conf, "a") as f:
            f.write(include)
    files = {"sealer-lab.conf": SERVER_CONF.format(address=ADDRESS, port=PORT,
                                                   socket_dir=p.socket_dir, tls_dir=p.tls_dir),
             "pg_hba.conf": HBA_CONF.format(db=DATABASE, role=ROLE, subnet=SUBNET)}
    for name, text in files.items():
        path = p.data / name
        path.write_text(text)
        os.chown(path, uid, gid)
        os.chmod(path, 0o600)


def _postmaster_pid(p: _Paths) -> int | None:
    try:
        pid = int((p.data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None
    return pid if exe in ("postgres", "postmaster") and _alive(pid) else None


def _in_db_netns(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{HOST}").st_ino
    except OSError:
        return False


def ready(timeout: int = 3) -> bool:
    """The server accepts connections on ADDRESS (from the root namespace, over the bridge)."""
    p = sh(str(bin_dir() / "pg_isready"), "-h", ADDRESS, "-p", str(PORT), "-d", DATABASE,
           "-t", str(timeout), check=False, timeout=timeout + 5)
    return p.returncode == 0


def _start(p: _Paths) -> int:
    _as_postgres(str(bin_dir() / "pg_ctl"), "-D", str(p.data), "-l", str(p.log), "-w",
                 "-t", str(_START_TIMEOUT_S), "start", netns=True, timeout=_START_TIMEOUT_S + 10,
                 check=False)
    pid = _postmaster_pid(p)
    if pid is None or not _wait(ready, 10, "the state database", raise_=False):
        tail = p.log.read_text(errors="replace")[-2000:] if p.log.exists() else ""
        _stop_server(p)
        raise LabError(f"PostgreSQL did not come up on {ADDRESS}:{PORT}: {tail}")
    return pid


def _stop_server(p: _Paths) -> bool:
    """pg_ctl stop -m fast, bounded; SIGKILL if it does not stop in time. True if one ran."""
    pid = _postmaster_pid(p)
    if pid is None:
        return False
    _as_postgres(str(bin_dir() / "pg_ctl"), "-D", str(p.data), "-m", "fast", "-w",
                 "-t", str(_STOP_TIMEOUT_S), "stop", timeout=_STOP_TIMEOUT_S + 10, check=False)
    if not _wait(lambda: not _alive(pid), 5, "PostgreSQL to stop", raise_=False):
        _signal(pid, 9)
        _wait(lambda: not _alive(pid), 5, "PostgreSQL to die")
    return True


def psql(sql: str, database: str = DATABASE, timeout: float = 30) -> str:
    """Run SQL (on stdin) as the superuser through the Unix socket; unaligned, tuples only."""
    p = _as_postgres("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h",
                     str(SOCKET_DIR), "-p", str(PORT), "-d", database,
                     input=sql, timeout=timeout, check=False)
    if p.returncode != 0:
        raise LabError(f"psql -> exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _ensure_role(password: str) -> None:
    """The role with the password's verifier, and its database. Idempotent: the verifier is
    replaced only when it no longer matches the password."""
    have = psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{ROLE}'", "postgres").strip()
    if have:
        iterations, rest = have.removeprefix("SCRAM-SHA-256$").split(":", 1)
        salt = base64.b64decode(rest.split("$", 1)[0])
        if scram_verifier(password, salt, int(iterations)) == have:
            verifier = None
        else:
            verifier = scram_verifier(password)
    else:
        verifier = scram_verifier(password)
    if verifier is not None:
        verb = "ALTER" if have else "CREATE"
        psql(f"{verb} ROLE {ROLE} LOGIN PASSWORD '{verifier}'", "postgres")
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", "postgres").strip():
        psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}", "postgres")


def up(lab) -> StateDb:
    """Start (or keep) the state database; `lab` is a Lab or its state dir. Idempotent: a server
    that runs and answers is left alone. Needs the lab's bridge (`python -m lab up`)."""
    p = _paths(lab)
    uid, gid = _postgres_ids()
    p.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = _password(p)
    _ensure_host()
    _initdb(p, uid, gid)
    _ensure_tls(p, uid, gid)
    pid = _postmaster_pid(p)
    if pid is not None and not (_in_db_netns(pid) and ready()):
        _stop_server(p)  # a server of an earlier namespace, or one that stopped answering
        pid = None
    if pid is None:
        pid = _start(p)
    _ensure_role(password)
    return StateDb(address=ADDRESS, port=PORT, database=DATABASE, user=ROLE, ca_file=p.ca_file,
                   passfile=p.passfile, pid=pid, versions=package_versions())


def stop(lab, clean: bool = False) -> bool:
    """Stop the server (True if one ran). `clean` (Lab.down) also removes its directory, the
    host and the password file and CA from the lab state."""
    p = _paths(lab)
    stopped = _stop_server(p) if (p.data / "postmaster.pid").exists() else False
    if clean:
        if remove_host():
            stopped = True
        shutil.rmtree(SERVER_DIR, ignore_errors=True)
        shutil.rmtree(p.state, ignore_errors=True)
    return stopped


def status(lab) -> dict:
    p = _paths(lab)
    pid = _postmaster_pid(p)
    return {"host": HOST, "address": f"{ADDRESS}:{PORT}", "running": pid is not None, "pid": pid,
            "ready": ready() if pid is not None else False, "data": str(p.data),
            "log": str(p.log), "versions": package_versions()}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("action", choices=("up", "down", "status"))


def main(a: argparse.Namespace, lab) -> dict:
    """up: where the state lives and PULUMI_BACKEND_URL (no secret in it)."""
    if a.action == "up":
        t0 = time.monotonic()
        db = up(lab)
        return {"backend_url": db.backend_url(), "host": HOST, "pid": db.pid,
                "versions": db.versions, "seconds": round(time.monotonic() - t0, 2)}
    if a.action == "down":
        return {"stopped": stop(lab, clean=True)}
    return status(lab)
