"""The engine's stack lock that a killed `up` leaves, and when a new `cli watch` leader may clear it.

What the DIY backends do (pulumi v3.274.0, pkg/backend/diy/lock.go and backend.go): every
operation that writes the stack first writes one lock file
``<backend>/.pulumi/locks/organization/<project>/<stack>/<uuid>.json`` (``.pulumi/locks/<stack>/``
in the older, non-project layout) holding ``{"pid", "username", "hostname", "timestamp"}``: the
pid of the `pulumi` CLI process that runs the operation, ``os.Hostname()`` and the writer's wall
clock. It refuses to start while another lock file exists ("the stack is currently locked by N
lock(s) ... created by user@host (pid P) at T") and deletes its own when it ends. Nothing expires:
an engine killed with SIGKILL (what a leader that lost its Lease does to its run) leaves its lock
for ever. ``pulumi cancel`` on a DIY backend (``CancelCurrentUpdate``) deletes *every* lock file
of the stack, whoever wrote it, without asking whether the writer is alive.

Where the lock lives depends on the backend, not what it holds (the DIY backend writes it through
its gocloud ``blob.Bucket``): ``file://`` a file under the directory; ``postgres://`` a row of the
state table (pkg/backend/diy/postgres/bucket.go@v3.274.0 and schema.sql@v3.274.0: table
``pulumi_state`` or the URL's ``?table=``, columns ``key TEXT PRIMARY KEY, data JSON,
updated_at``; every write one ``INSERT ... ON CONFLICT DO UPDATE``, so no torn checkpoint as on
file://; ``key`` is the object key prefixed with the URL's path and a slash,
pkg/backend/diy/backend.go@v3.274.0 ``blob.PrefixedBucket``,
e.g. ``pulumi/.pulumi/locks/organization/<project>/<stack>/<uuid>.json`` for database ``pulumi``;
``data`` is ``{"data": "<the lock JSON, base64>"}``); ``s3://`` an object of the bucket, its key
the URL's path, a slash and the object key (the same PrefixedBucket). ``FileLocks``,
``PostgresLocks`` and ``S3Locks`` (boto3) read and delete them; a ``gs://`` or ``azblob://`` lock
is not read here: the engine's own refusal names it (``parse_locked_error``) and an operator
clears it.

So a new leader never runs ``pulumi cancel`` blindly. The leader records its engine run in the
Lease (annotation ``ENGINE_RUN``: the hostname the lock will carry, the engine's pid(s) once
started, when it started by the same machine's clock, and the recovery it applies). A new
leader that took the Lease over (the old one's lease expired, or it was released) clears a lock
only when the lock's hostname is the old leader's and the lock's pid is the old leader's engine
(or, when the old leader died before it could record the pid, the lock was written on that host
after the run started by that host's clock). Any other lock: it waits and says whose lock it is.

A killed engine also leaves ``pending_operations`` in the checkpoint (each step it had started);
``pulumi up`` keeps carrying them (pkg/resource/deploy/deployment_executor.go only warns, and
engine/journal_snapshot.go copies them into every new snapshot) until a ``pulumi refresh``. This
program's steps are idempotent scripts and server-side applies, so an operation that was in
flight is simply run again by the next `up`: ``drop_pending`` takes them out of the state (what
``pulumi stack export | ... | pulumi stack import`` does by hand) after the lock is cleared.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import parse_qsl, unquote, urlparse

ENGINE_RUN = "sealer-registry.io/engine-run"   # the Lease annotation of the leader's engine run


@dataclass(frozen=True)
class StackLock:
    """One lock file as the engine wrote it."""

    where: str          # the file (file://), the row key (postgres://) or the URL the engine named
    pid: int
    username: str
    hostname: str
    timestamp: str      # the writer's wall clock, RFC 3339
    # postgres://: the row's ``data->>'data'`` as read; the row is deleted only while it still
    # holds exactly this (compare-and-delete).
    blob: str = field(default="", compare=False, repr=False)

    def describe(self) -> str:
        return f"{self.username}@{self.hostname} (pid {self.pid}) at {self.timestamp}"

    def as_json(self) -> dict:
        return {"where": self.where, "pid": self.pid, "username": self.username,
                "hostname": self.hostname, "timestamp": self.timestamp}


@dataclass(frozen=True)
class EngineRun:
    """What a leader records in the Lease about its engine run (annotation ``ENGINE_RUN``)."""

    host: str                          # socket.gethostname(): the lock's "hostname"
    started: str                       # UTC, the leader's clock (the lock's clock too)
    pids: tuple[int, ...] = ()         # the `pulumi` processes of the run, once seen
    master0: str | None = None         # the recovery it applies (None: master0 stays)
    down_hosts: tuple[str, ...] = ()
    state: str = "running"             # running | verified | failed

    def to_text(self) -> str:
        return json.dumps({"host": self.host, "started": self.started, "pids": list(self.pids),
                           "master0": self.master0, "down_hosts": list(self.down_hosts),
                           "state": self.state}, sort_keys=True)

    @classmethod
    def from_text(cls, text: str | None) -> "EngineRun | None":
        """None for a missing or unreadable annotation (never an exception: it comes from the
        apiserver, written by another watcher)."""
        if not text:
            return None
        try:
            doc = json.loads(text)
            return cls(host=str(doc["host"]), started=str(doc.get("started") or ""),
                       pids=tuple(int(p) for p in doc.get("pids") or ()),
                       master0=doc.get("master0") or None,
                       down_hosts=tuple(str(h) for h in doc.get("down_hosts") or ()),
                       state=str(doc.get("state") or "running"))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class DeadRun:
    """An engine run known to be over without having removed its lock: the previous leader's
    (we took its Lease after it expired or was released: it stopped acting and killed its run
    at its renew deadline) or our own run that we killed."""

    run: EngineRun
    holder: str = ""        # the Lease holderIdentity it ran under
    why: str = ""


@dataclass(frozen=True)
class Verdict:
    clear: tuple[StackLock, ...] = ()
    keep: tuple[StackLock, ...] = ()
    why: str = ""

    @property
    def blocked(self) -> bool:
        return bool(self.keep)


def parse_time(text: str) -> datetime | None:
    """RFC 3339 as Go writes it (up to 9 fraction digits, Z or an offset) or as we do."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?",
                     (text or "").strip())
    if not m:
        return None
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    zone = m.group(3) or "Z"
    try:
        return datetime.fromisoformat(f"{m.group(1)}.{frac}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None


def _written_by(lock: StackLock, dead: DeadRun) -> str:
    """Why ``lock`` is ``dead``'s run's lock ("" when it is not)."""
    run = dead.run
    if lock.hostname != run.host:
        return ""
    if run.pids:
        return f"pid {lock.pid} is its engine" if lock.pid in run.pids else ""
    # Killed before it could record its engine's pid: a lock written on that host after the
    # run started, both by that host's clock.
    written, started = parse_time(lock.timestamp), parse_time(run.started)
    if written is not None and started is not None and written >= started:
        return "written on its host after its run started (its pid was not recorded yet)"
    return ""


def decide(locks: list[StackLock], dead: list[DeadRun]) -> Verdict:
    """Which locks may go: each one written by an engine run in ``dead`` (same hostname, and its
    recorded pid, else written after that run started). Everything else is kept, and a kept lock
    blocks the `up`: it may be an operator's `pulumi up`, or a run we know nothing of."""
    clear, keep, whys = [], [], []
    for lock in locks:
        match = next(((d, w) for d in dead if (w := _written_by(lock, d))), None)
        if match is None:
            keep.append(lock)
            owners = "; ".join(f"{d.run.host} pids {list(d.run.pids) or 'unrecorded'}"
                               for d in dead) or "none known"
            whys.append(f"{lock.describe()} is not an engine run of a previous leader whose lease "
                        f"expired (those: {owners}): left alone")
        else:
            clear.append(lock)
            whys.append(f"{lock.describe()}: the engine run of {match[0].holder or match[0].run.host} "
                        f"({match[0].why or 'its lease expired'}); {match[1]}")
    return Verdict(tuple(clear), tuple(keep), "; ".join(whys) or "the stack is not locked")


ENGINE_COMM = "pulumi"   # /proc/<pid>/comm of the engine's CLI process, the lock's pid


def engine_alive(pid: int) -> bool:
    """Whether ``pid`` is a running `pulumi` process on this machine: a pid the kernel gave to
    another program since, or a zombie, is not the lock's writer any more."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != ENGINE_COMM:
            return False
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def gone_here(locks: list[StackLock], hostname: str,
              alive: Callable[[int], bool] | None = None) -> list[DeadRun]:
    """The engine runs of this machine (the locks' ``hostname`` is ours) whose process is gone: an
    operator's `up` killed with SIGKILL, or whose machine rebooted. ``decide`` clears exactly
    their locks; a lock of another machine, or of a live engine here, is kept."""
    alive = alive or engine_alive
    return [DeadRun(EngineRun(host=hostname, started="", pids=(lock.pid,)), holder=hostname,
                    why="its engine process on this machine is gone")
            for lock in locks if lock.hostname == hostname and lock.pid > 0 and not alive(lock.pid)]


def remove_lock(store: "LockStore", lock: StackLock) -> str:
    """Deletes ``lock`` through ``store``: "" when it is gone, else why not."""
    try:
        return store.remove(lock)
    except LockStoreError as e:
        return str(e)


# ------------------------------------------------------------------------------ file:// I/O


def file_backend_root(url: str | None) -> Path | None:
    """The directory of a ``file://`` backend URL (None for any other backend)."""
    if not url or not url.startswith("file://"):
        return None
    parsed = urlparse(url)
    path = unquote((parsed.netloc or "") + parsed.path)
    if path.startswith("~"):
        path = str(Path(path).expanduser())
    return Path(path)


def lock_files(root: Path, project: str, stack: str) -> list[Path]:
    base = root / ".pulumi" / "locks"
    short = stack.rsplit("/", 1)[-1]
    dirs = [base / "organization" / project / short, base / short]
    return sorted(p for d in dirs if d.is_dir() for p in d.glob("*.json"))


def read_lock(path: Path) -> StackLock | None:
    try:
        return lock_of(path.read_text(), str(path))
    except OSError:
        return None


def read_locks(root: Path, project: str, stack: str) -> list[StackLock]:
    return [lock for p in lock_files(root, project, stack) if (lock := read_lock(p)) is not None]


def lock_of(text: str | bytes, where: str, blob: str = "") -> StackLock | None:
    """A lock object's JSON (lock.go ``lockContent``) -> StackLock; None when unreadable."""
    try:
        doc = json.loads(text)
        return StackLock(where, int(doc["pid"]), str(doc.get("username") or ""),
                         str(doc.get("hostname") or ""), str(doc.get("timestamp") or ""), blob)
    except (ValueError, KeyError, TypeError):
        return None


def lock_prefixes(project: str, stack: str) -> tuple[str, str]:
    """The object-key folders of a stack's locks (lock.go ``stackLockDir``): the project layout
    and the older one without projects."""
    short = stack.rsplit("/", 1)[-1]
    return (f".pulumi/locks/organization/{project}/{short}/", f".pulumi/locks/{short}/")


class LockStoreError(Exception):
    """The backend's lock objects could not be read or deleted (nothing was deleted)."""


class LockStore(Protocol):
    where: str   # the backend, for messages (no secret)

    def read(self, project: str, stack: str) -> list[StackLock]: ...

    def remove(self, lock: StackLock) -> str:
        """Delete exactly ``lock``; "" when done (or already gone), else why not."""
        ...


@dataclass(frozen=True)
class FileLocks:
    root: Path

    @property
    def where(self) -> str:
        return f"file://{self.root}"

    def read(self, project: str, stack: str) -> list[StackLock]:
        return read_locks(self.root, project, stack)

    def remove(self, lock: StackLock) -> str:
        try:
            os.unlink(lock.where)
        except FileNotFoundError:
            pass
        except OSError as e:
            return f"{lock.where}: {e.strerror}"
        return ""


# ------------------------------------------------------------------------------ postgres:// I/O

# lib/pq v1.12.3 (the driver pulumi v3.274.0 links; connector.go ``Config``): the URL's query
# parameters it knows and the libpq environment variable psql takes each from. Its own
# extensions (env:"-") change nothing psql needs, but ``sslinline`` (the PEM in the URL), which
# libpq cannot take. Any other parameter lib/pq sends to the server as a run-time setting:
# psql gets it through PGOPTIONS ``-c name=value``. ``table`` is pulumi's, not the driver's.
PQ_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE",
    "user": "PGUSER", "passfile": "PGPASSFILE",
    "application_name": "PGAPPNAME", "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT", "sslsni": "PGSSLSNI", "sslcrl": "PGSSLCRL",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "krbsrvname": "PGKRBSRVNAME", "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING", "datestyle": "PGDATESTYLE", "tz": "PGTZ",
    "geqo": "PGGEQO", "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS", "service": "PGSERVICE",
}
PQ_ONLY = {"fallback_application_name", "krbspn", "binary_parameters",
           "disable_prepared_binary_result", "min_protocol_version", "max_protocol_version",
           # libpq connection options lib/pq does not implement (it would send them to the
           # server): they tune liveness only
           "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
           "tcp_user_timeout"}
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")
PSQL_TIMEOUT_S = 30


@dataclass(frozen=True)
class PostgresTarget:
    """Where a ``postgres://`` backend keeps its objects, and how psql reaches it."""

    env: dict                  # the PG* variables (libpq) the URL sets, never a password
    table: str                 # pulumi's table (``?table=``, default pulumi_state)
    prefix: str                # the key prefix (the URL's path, e.g. "pulumi/")
    where: str                 # for messages: postgres://host:port/db?table=T, no user or secret
    password: str = field(default="", repr=False)   # the URL's own; psql reads it from a passfile

    def key(self, object_key: str) -> str:
        return self.prefix + object_key


def postgres_target(url: str | None) -> PostgresTarget | None:
    """A ``postgres://`` (or ``postgresql://``) backend URL -> how to reach its table, as the
    engine does: pulumi v3.274.0 pkg/backend/diy/postgres/bucket.go (``table`` taken out, the
    rest handed to lib/pq) and backend.go (the path, without its leading slashes, prefixes every
    key); lib/pq v1.12.3 connector.go ``convertURL`` (user, password, host, port, dbname from the
    URL's parts, every query parameter as a connection parameter; sslmode defaults to
    ``require``). None for another scheme. The variables go in psql's environment, never its
    argv; the caller's environment (PGPASSWORD, PGPASSFILE...) is inherited as the engine's is.
    A password written in the URL goes to neither: psql reads it from a 0600 passfile made for
    the call (``PostgresLocks._psql``), so no process listing or environment dump shows it."""
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        return None
    params: dict[str, str] = {}
    if parsed.username:
        params["user"] = unquote(parsed.username)
    password = unquote(parsed.password) if parsed.password else ""
    if parsed.hostname:
        params["host"] = parsed.hostname
    try:
        if parsed.port:
            params["port"] = str(parsed.port)
    except ValueError as e:
        raise LockStoreError(f"backend URL: {e}") from None
    path = unquote(parsed.path)
    if path[1:]:
        params["dbname"] = path[1:]
    table, options = "pulumi_state", []
    for k, v in parse_qsl(parsed.query, keep_blank_values=True):
        if k == "table":
            table = v or table
        elif k == "sslinline":
            raise LockStoreError("backend URL: sslinline (the certificate in the URL) is lib/pq's "
                                 "own: psql cannot use it; the lock is not read")
        elif k == "password":
            password = v or password
        elif k == "options":
            options.append(v)
        elif k in PQ_ENV:
            if v:
                params[k] = v
        elif k not in PQ_ONLY and v:
            options.append(f"-c {k}={v.replace(chr(92), chr(92) * 2).replace(' ', chr(92) + ' ')}")
    if "\n" in password or "\r" in password:
        raise LockStoreError("backend URL: the password holds a line break, which a passfile "
                             "cannot: the lock is not read")
    if not TABLE_NAME.fullmatch(table):
        raise LockStoreError(f"backend URL: table {table!r} is not a plain (schema.)name: the lock "
                             "is not read")
    env = {PQ_ENV[k]: v for k, v in params.items()}
    if "sslmode" not in params and not os.environ.get("PGSSLMODE"):
        env["PGSSLMODE"] = "require"   # lib/pq's default (libpq's is prefer)
    if options:
        env["PGOPTIONS"] = " ".join([*filter(None, [os.environ.get("PGOPTIONS")]), *options])
    prefix = path.lstrip("/")
    prefix = prefix + "/" if prefix and not prefix.endswith("/") else prefix
    shown = f"postgres://{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}{path}"
    return PostgresTarget(env, table, prefix, f"{shown}?table={table}", password)


Runner = Callable[..., subprocess.CompletedProcess]


@dataclass
class PostgresLocks:
    """The lock rows of a ``postgres://`` backend, read and deleted with psql (the PostgreSQL
    client; the SQL on stdin, values as psql variables, the connection in the environment)."""

    target: PostgresTarget
    run: Runner = subprocess.run

    @property
    def where(self) -> str:
        return self.target.where

    def _psql(self, sql: str, **variables: str) -> str:
        argv = ["psql", "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1",
                *[a for k, v in variables.items() for a in ("-v", f"{k}={v}")]]
        with tempfile.TemporaryDirectory(prefix="sealer-registry-pg-") as private:
            env = {**os.environ, **self.target.env}
            if self.target.password:
                # libpq: a password from the connection string wins over PGPASSWORD, which wins
                # over the passfile; the URL's own therefore replaces an inherited PGPASSWORD.
                env.pop("PGPASSWORD", None)
                env["PGPASSFILE"] = write_passfile(private, self.target.password)
            return self._run_psql(argv, sql, env)

    def _run_psql(self, argv: list[str], sql: str, env: dict) -> str:
        try:
            done = self.run(argv, input=sql, env=env,
                            capture_output=True, text=True, timeout=PSQL_TIMEOUT_S)
        except FileNotFoundError:
            raise LockStoreError("psql is not installed (Debian: postgresql-client): the lock "
                                 "rows cannot be read") from None
        except subprocess.TimeoutExpired:
            raise LockStoreError(f"psql to {self.where}: no answer in {PSQL_TIMEOUT_S}s") from None
        if done.returncode != 0:
            detail = " ".join((done.stderr or "").split())[:500]
            raise LockStoreError(f"psql to {self.where} -> exit {done.returncode}: {detail}")
        return done.stdout

    def read(self, project: str, stack: str) -> list[StackLock]:
        """The stack's lock rows (keys compared exactly: no LIKE, whose ``_`` would match any
        character of a stack name)."""
        new, old = (self.target.key(p) for p in lock_prefixes(project, stack))
        out = self._psql(
            "SELECT coalesce(json_agg(json_build_object('key', key, 'data', data->>'data') "
            f"ORDER BY key), '[]') FROM {self.target.table} "
            "WHERE left(key, length(:'new')) = :'new' OR left(key, length(:'old')) = :'old';\n",
            new=new, old=old)
        try:
            rows = json.loads(out.strip() or "[]")
        except ValueError:
            raise LockStoreError(f"psql to {self.where}: unreadable answer {out[:200]!r}") from None
        return locks_of_rows(rows, (new, old))

    def remove(self, lock: StackLock) -> str:
        """Delete the row only while it still holds what was read (a row another engine rewrote
        is not this lock any more)."""
        out = self._psql(f"DELETE FROM {self.target.table} WHERE key = :'key' "
                         "AND data->>'data' = :'blob' RETURNING key;\n"
                         f"SELECT count(*) FROM {self.target.table} WHERE key = :'key';\n",
                         key=lock.where, blob=lock.blob)
        lines = out.split()
        if lines and lines[0] == lock.where:
            return ""
        if lines and lines[-1] == "0":
            return ""   # gone already (its engine ended after all)
        return f"{lock.where}: the row changed since it was read: left alone"


def write_passfile(directory: str, password: str) -> str:
    """A libpq passfile (``*:*:*:*:password``; ``:`` and ``\\`` escaped, as libpq's
    passwordFromFile reads them) created 0600 in ``directory`` (libpq ignores a passfile others
    can read). The path goes to PGPASSFILE; the password to no argv and no environment."""
    path = os.path.join(directory, "pgpass")
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"*:*:*:*:{escaped}\n")
    return path


def locks_of_rows(rows: list, prefixes: tuple[str, ...]) -> list[StackLock]:
    """psql's ``[{"key", "data"}]`` -> the locks directly in one of ``prefixes`` (a ``.json``
    object, as lock.go names them); unreadable rows are skipped."""
    locks = []
    for row in rows if isinstance(rows, list) else []:
        key, blob = (row or {}).get("key"), (row or {}).get("data")
        if not isinstance(key, str) or not isinstance(blob, str):
            continue
        rest = next((key[len(p):] for p in prefixes if key.startswith(p)), None)
        if rest is None or "/" in rest or not rest.endswith(".json"):
            continue
        try:
            text = base64.b64decode(blob, validate=True)
        except ValueError:
            continue
        lock = lock_of(text, key, blob)
        if lock is not None:
            locks.append(lock)
    return locks


# ------------------------------------------------------------------------------ s3:// I/O

# gocloud.dev v0.46.1-0.20260810195832-b5401c07b5f1 (what pulumi v3.274.0 links): blob/s3blob
# s3blob.go ``URLOpener.OpenBucketURL`` takes these query parameters itself, aws/aws.go
# ``V2ConfigFromURLParams`` the rest; any other is "unknown query parameter" (the engine refuses
# the URL). pulumi's backend.go ``translateLegacyS3Params`` first turns the SDK v1 names into
# these (disableSSL -> disable_https; a scheme-less endpoint gets https://, or http:// with
# disableSSL) and, when an endpoint is set, defaults request_checksum_calculation to
# when_required.
S3_BUCKET_PARAMS = {"sse_type", "kmskeyid", "accelerate", "use_path_style", "s3ForcePathStyle",
                    "disable_https", "awssdk"}
S3_CONFIG_PARAMS = {"hostname_immutable", "region", "endpoint", "profile", "dualstack", "fips",
                    "rate_limiter_capacity", "anonymous", "role", "request_checksum_calculation",
                    "response_checksum_validation"}
S3_TIMEOUT_S = 30


def _go_bool(value: str) -> bool:
    return value in {"1", "t", "T", "TRUE", "true", "True"}


@dataclass(frozen=True)
class S3Target:
    """Where an ``s3://`` backend keeps its objects and how boto3 reaches them as the engine's
    AWS SDK does (the same endpoint, addressing style, region and credentials chain)."""

    bucket: str
    prefix: str                # the URL's path, every key's prefix (backend.go PrefixedBucket)
    endpoint: str | None       # a third-party store's URL (MinIO, Ceph RGW, Versity, ...)
    region: str | None
    path_style: bool           # use_path_style / s3ForcePathStyle: bucket in the path
    profile: str | None
    anonymous: bool
    dualstack: bool
    fips: bool
    where: str                 # for messages: s3://bucket/prefix?endpoint=... (no secret in it)

    def key(self, object_key: str) -> str:
        return self.prefix + object_key


def s3_target(url: str | None) -> S3Target | None:
    """An ``s3://`` backend URL -> S3Target, read as pulumi v3.274.0 and its gocloud.dev read it
    (see S3_BUCKET_PARAMS); None for another scheme. Credentials are never in the URL: boto3 takes
    them where the engine's SDK does (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a shared
    credentials file and its profile, AWS_CA_BUNDLE for a private CA). ``role=`` (an assumed
    role) is refused: the lock is then not read and the engine's own check decides."""
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        return None
    if not parsed.netloc:
        raise LockStoreError("backend URL: s3:// names no bucket: the lock is not read")
    params = dict(parse_qsl(parsed.query, keep_blank_values=True))
    unknown = sorted(k for k in params if k not in S3_BUCKET_PARAMS | S3_CONFIG_PARAMS
                     and k != "disableSSL")
    if unknown:
        raise LockStoreError(f"backend URL: query parameter {unknown[0]!r} is not one the engine's "
                             "S3 driver takes: the lock is not read")
    if params.get("role"):
        raise LockStoreError("backend URL: role= (an assumed role) is not followed here: the lock "
                             "is not read")
    disable_ssl = _go_bool(params.pop("disableSSL", "false"))
    endpoint = params.get("endpoint") or None
    if endpoint and "://" not in endpoint:
        endpoint = ("http://" if disable_ssl else "https://") + endpoint
    if endpoint and _go_bool(params.get("disable_https", "false")) and endpoint.startswith("https://"):
        endpoint = "http://" + endpoint[len("https://"):]
    path_style = _go_bool(params.get("use_path_style") or params.get("s3ForcePathStyle") or "false")
    prefix = unquote(parsed.path).lstrip("/")
    prefix = prefix + "/" if prefix and not prefix.endswith("/") else prefix
    shown = f"s3://{parsed.netloc}/{prefix}" + (f"?endpoint={endpoint}" if endpoint else "")
    return S3Target(parsed.netloc, prefix, endpoint, params.get("region") or None, path_style,
                    params.get("profile") or None, _go_bool(params.get("anonymous", "false")),
                    _go_bool(params.get("dualstack", "false")), _go_bool(params.get("fips", "false")),
                    shown)


@dataclass
class S3Locks:
    """The lock objects of an ``s3://`` backend, listed, read and deleted with boto3 (AWS's own
    Python SDK, the client of the same API the engine's Go SDK speaks; imported only here, so
    that a file:// or postgres:// user needs none of it)."""

    target: S3Target
    client: object = None      # a boto3 S3 client; made on first use (tests pass their own)

    @property
    def where(self) -> str:
        return self.target.where

    def _client(self):
        if self.client is None:
            try:
                import boto3
                from botocore import UNSIGNED
                from botocore.config import Config
            except ImportError:
                raise LockStoreError("boto3 is not installed (pip install -r requirements.txt): "
                                     "the lock objects cannot be read") from None
            t = self.target
            options = dict(s3={"addressing_style": "path" if t.path_style else "virtual"},
                           connect_timeout=10, read_timeout=S3_TIMEOUT_S,
                           retries={"max_attempts": 3, "mode": "standard"},
                           use_dualstack_endpoint=t.dualstack or None, use_fips_endpoint=t.fips or None)
            if t.endpoint:
                options["request_checksum_calculation"] = "when_required"   # as the engine
            if t.anonymous:
                options["signature_version"] = UNSIGNED
            try:
                session = boto3.session.Session(profile_name=t.profile)
                self.client = session.client(
                    "s3", endpoint_url=t.endpoint,
                    region_name=t.region or os.environ.get("AWS_REGION") or None,
                    config=Config(**{k: v for k, v in options.items() if v is not None}))
            except Exception as e:   # botocore's ProfileNotFound, NoRegionError, ...
                raise LockStoreError(f"{self.where}: {e}") from None
        return self.client

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return fn(**kwargs)
        except ClientError as e:
            error = e.response.get("Error", {})
            raise LockStoreError(f"{what} on {self.where}: {error.get('Code', '?')}: "
                                 f"{error.get('Message', '')}".rstrip(": ")) from None
        except BotoCoreError as e:
            raise LockStoreError(f"{what} on {self.where}: {e}") from None

    def read(self, project: str, stack: str) -> list[StackLock]:
        """The objects directly under the stack's lock folders (lock.go lists them the same way:
        ``listBucket`` of ``stackLockDir``), each with the ETag it was read at."""
        client = self._client()
        locks: list[StackLock] = []
        for folder in lock_prefixes(project, stack):
            prefix = self.target.key(folder)
            keys: list[str] = []
            token = None
            while True:
                page = self._call("listing the locks", client.list_objects_v2,
                                  Bucket=self.target.bucket, Prefix=prefix, Delimiter="/",
                                  **({"ContinuationToken": token} if token else {}))
                keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
            for key in sorted(keys):
                try:
                    got = self._call("reading a lock", client.get_object,
                                     Bucket=self.target.bucket, Key=key)
                except LockStoreError as e:
                    if "NoSuchKey" in str(e):
                        continue   # its engine ended between the listing and the read
                    raise
                lock = lock_of(got["Body"].read(), key, got.get("ETag", ""))
                if lock is not None:
                    locks.append(lock)
        return locks

    def remove(self, lock: StackLock) -> str:
        """Delete the object only while it is still what was read: its ETag is compared first
        (lock.go writes a lock under a key of its own process, ``<backend uuid>.json``, and only
        that process writes the key again; the compare keeps a rewrite by it). S3 has no delete
        conditional on content everywhere (If-Match on DeleteObject is recent and not in every
        S3-compatible store), so the window is the time between the compare and the delete."""
        client = self._client()
        try:
            head = self._call("reading a lock", client.head_object,
                              Bucket=self.target.bucket, Key=lock.where)
        except LockStoreError as e:
            if any(code in str(e) for code in ("NoSuchKey", "404", "Not Found")):
                return ""   # gone already (its engine ended after all)
            raise
        if lock.blob and head.get("ETag", "") != lock.blob:
            return f"{lock.where}: the object changed since it was read: left alone"
        self._call("deleting a lock", client.delete_object, Bucket=self.target.bucket, Key=lock.where)
        return ""


def lock_store(url: str | None, run: Runner = subprocess.run) -> LockStore | None:
    """The stack locks of backend ``url``: a directory, a PostgreSQL table, an S3 bucket, or None
    (gs://, azblob://, or no URL: the engine's own check is all there is)."""
    root = file_backend_root(url)
    if root is not None:
        return FileLocks(root)
    target = postgres_target(url)
    if target is not None:
        return PostgresLocks(target, run)
    s3 = s3_target(url)
    if s3 is not None:
        return S3Locks(s3)
    return None


LOCK_LINE = re.compile(r"^\s*(?P<where>\S+): created by (?P<user>[^@\s]*)@(?P<host>\S+) "
                       r"\(pid (?P<pid>\d+)\) at (?P<ts>\S+)\s*$", re.M)


def parse_locked_error(text: str) -> list[StackLock]:
    """The locks the engine lists when it refuses to start (any DIY backend):
    ``  <url>: created by user@host (pid P) at T``."""
    if "currently locked" not in text:
        return []
    return [StackLock(m["where"], int(m["pid"]), m["user"], m["host"], m["ts"])
            for m in LOCK_LINE.finditer(text)]


def utc_stamp(at: datetime | None = None) -> str:
    at = at or datetime.now(timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Pending:
    """The pending operations of a checkpoint (``pulumi stack export``'s deployment)."""

    operations: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, deployment: dict) -> "Pending":
        return cls(list(deployment.get("pending_operations") or []))

    def describe(self) -> list[str]:
        return [f"{(op.get('resource') or {}).get('urn', '?').rsplit('::', 1)[-1]} "
                f"({op.get('type', '?')})" for op in self.operations]


def without_pending(deployment: dict) -> dict:
    return {k: v for k, v in deployment.items() if k != "pending_operations"}


def checkpoint_paths(root: Path, project: str, stack: str) -> list[Path]:
    short = stack.rsplit("/", 1)[-1]
    base = root / ".pulumi" / "stacks"
    return [base / project / f"{short}.json", base / f"{short}.json"]


def repair_checkpoint(root: Path, project: str, stack: str) -> str:
    """A file:// backend writes the checkpoint in place (pulumi adds ``no_tmp_dir=true``): an
    engine killed during that write leaves it truncated ("failed to load checkpoint: EOF"), and
    every later command of the stack fails. The backend keeps the previous checkpoint beside it
    (``<stack>.json.bak``, pkg/backend/diy/state.go ``backupTarget``): restored when the
    checkpoint does not parse and the backup does. Call only when the writer is known dead.
    Returns what was done ("" when nothing was needed)."""
    for path in checkpoint_paths(root, project, stack):
        if not path.exists():
            continue
        try:
            json.loads(path.read_text())
            return ""
        except (OSError, ValueError):
            pass
        bak = path.with_name(path.name + ".bak")
        try:
            text = bak.read_text()
            json.loads(text)
        except (OSError, ValueError):
            return f"{path} does not parse, nor does {bak}: not repaired"
        tmp = path.with_name(path.name + ".sealer-tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return f"{path} did not parse (its writer was killed): restored from {bak}"
    return ""
