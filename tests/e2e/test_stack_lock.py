"""The stack lock and pending operations a killed engine run leaves, with the REAL engine
(pulumi v3.274.0 from the toolchain), on a file:// backend, on the lab's real PostgreSQL
(postgres://, Debian's server, TLS verify-full, the password only in a pgpass file) and on the
lab's S3 store (s3://, Versity S3 Gateway over TLS, the keys only in a credentials file), and how
`cli watch` clears them (cli/stacklock.py): the lock (a file, a row of Pulumi's table, an object) carries
the `pulumi up` process's pid and the hostname; a new leader's verdict keeps a lock of another
pid (the engine then still refuses to run) and clears only the killed run's, through the
backend's own storage; the pending operation is dropped from the state and the next `up`
succeeds. A tiny project with one slow local command; the postgres and s3 cases need a small lab
(one host, the bridge, the db host and the S3 host). Every wait is bounded."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from typing import Callable

import pytest

from cli.engine import Engine
from cli.stacklock import (DeadRun, EngineRun, LockStore, PostgresLocks, S3Locks, decide,
                           lock_store, utc_stamp)
from lab import Lab
from lab import postgres as lab_postgres
from lab import s3 as lab_s3
from lab.hosts import LabError

PROGRAM = """\
import pulumi
import pulumi_command as command
quick = command.local.Command("quick", create="true")
command.local.Command("slow", create="sleep 60; : lockprobe", opts=pulumi.ResourceOptions(depends_on=[quick]))
"""
FOREIGN = {"pid": 1, "username": "operator", "hostname": "ops-laptop",
           "timestamp": "2026-12-06T18:00:00.5Z"}


@dataclass
class Backend:
    """One backend under test: its URL, the watcher's view of its locks (``store``), and an
    independent view of its raw lock objects (a directory listing; psql as the superuser)."""

    url: str
    store: LockStore
    raw_locks: Callable[[], list[str]]            # the lock objects' names / keys
    write_foreign: Callable[[dict], str]           # another process's lock; returns its name
    env: dict[str, str] = field(default_factory=dict)   # what the engine needs beside the URL


@pytest.fixture(scope="module")
def locklab(tmp_path_factory):
    """A lab of one host (only what the db and S3 hosts need: the bridge)."""
    Lab().down()  # a crashed earlier run holds the names
    lab = Lab(tmp_path_factory.mktemp("locklab"))
    try:
        lab.up(masters=1, nodes=0)
    except LabError as e:
        lab.down()
        pytest.fail(f"the lab did not come up: {e}", pytrace=False)
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def state_db(locklab):
    """The lab's PostgreSQL (Debian's server)."""
    try:
        return lab_postgres.up(locklab)
    except LabError as e:
        pytest.fail(f"the lab's state database did not come up: {e}", pytrace=False)


@pytest.fixture(scope="module")
def s3_store(locklab):
    """The lab's S3 store (versitygw, built by `make toolchain`)."""
    try:
        return lab_s3.up(locklab)
    except LabError as e:
        pytest.fail(f"the lab's S3 store did not come up: {e}", pytrace=False)


def file_backend(state: Path) -> Backend:
    url = f"file://{state}"
    locks_dir = state / ".pulumi/locks/organization/lockprobe/dev"

    def write(doc: dict) -> str:
        locks_dir.mkdir(parents=True, exist_ok=True)
        path = locks_dir / "00000000-foreign.json"
        path.write_text(json.dumps(doc))
        return str(path)

    return Backend(url, lock_store(url),
                   lambda: sorted(str(p) for p in locks_dir.glob("*.json")), write)


def postgres_backend(db: lab_postgres.StateDb) -> Backend:
    """A table of its own (``?table=``): the backend URL's table parameter is honoured too."""
    table = f"lockprobe_{secrets.token_hex(4)}"
    url = db.backend_url(table=table)
    prefix = f"{db.database}/.pulumi/locks/organization/lockprobe/dev/"

    def raw() -> list[str]:
        out = lab_postgres.psql(f"SELECT key FROM {table} WHERE left(key, {len(prefix)}) = "
                                f"'{prefix}' ORDER BY key")
        return out.split()

    def write(doc: dict) -> str:
        import base64

        key = prefix + "00000000-foreign.json"
        blob = base64.b64encode(json.dumps(doc).encode()).decode()
        lab_postgres.psql(f"INSERT INTO {table} (key, data) VALUES ('{key}', "
                          f"json_build_object('data', '{blob}'))")
        return key

    store = lock_store(url)
    assert isinstance(store, PostgresLocks) and store.target.table == table
    return Backend(url, store, raw, write)


def s3_backend(store: lab_s3.S3Store) -> Backend:
    """A key prefix of its own in the lab's bucket (the URL's path: every key under it). The raw
    view lists the bucket with the store's root account."""
    prefix = f"lockprobe-{secrets.token_hex(4)}"
    url = store.backend_url(prefix)
    folder = f"{prefix}/.pulumi/locks/organization/lockprobe/dev/"
    root = lab_s3.client(store)

    def raw() -> list[str]:
        listed = root.list_objects_v2(Bucket=store.bucket, Prefix=folder)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def write(doc: dict) -> str:
        key = folder + "00000000-foreign.json"
        root.put_object(Bucket=store.bucket, Key=key, Body=json.dumps(doc).encode())
        return key

    backend = lock_store(url)
    assert isinstance(backend, S3Locks) and backend.target.prefix == prefix + "/"
    return Backend(url, backend, raw, write, store.env(prefix))


@pytest.fixture(params=["file", "postgres", "s3"])
def project(request, tmp_path, toolchain_env):
    proj, state = tmp_path / "proj", tmp_path / "state"
    proj.mkdir()
    state.mkdir()
    (proj / "Pulumi.yaml").write_text("name: lockprobe\nruntime: python\n")
    (proj / "__main__.py").write_text(PROGRAM)
    backend = (file_backend(state) if request.param == "file"
               else postgres_backend(request.getfixturevalue("state_db"))
               if request.param == "postgres" else s3_backend(request.getfixturevalue("s3_store")))
    extra = dict(backend.env, PULUMI_BACKEND_URL=backend.url)
    env = dict(toolchain_env, PULUMI_SKIP_UPDATE_CHECK="true", **extra)
    # This process (the Engine's Automation API, boto3 for S3Locks) sees the same backend.
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        subprocess.run(["pulumi", "--non-interactive", "stack", "init", "dev"], cwd=proj, env=env,
                       check=True, capture_output=True)
        yield proj, backend, env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.environ["PULUMI_BACKEND_URL"] = saved["PULUMI_BACKEND_URL"] or toolchain_env["PULUMI_BACKEND_URL"]


def marked() -> list[int]:
    """The slow step's shell (its command line carries the marker)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and b": lockprobe" in open(f"/proc/{entry}/cmdline", "rb").read():
                found.append(int(entry))
        except OSError:
            pass
    return found


def killed_up(proj, env) -> tuple[int, str]:
    """`pulumi up` killed with SIGKILL while its slow step runs (as a leader that lost its Lease
    kills its run); returns its pid and when the run started (UTC)."""
    started = utc_stamp()
    up = subprocess.Popen(["pulumi", "--non-interactive", "up", "--yes", "--stack", "dev"],
                          cwd=proj, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marked():
            assert time.monotonic() < deadline and up.poll() is None, "the slow step never ran"
            time.sleep(0.1)
    finally:
        os.killpg(up.pid, signal.SIGKILL)  # the engine and everything it started
        up.wait(10)
        for pid in marked():
            os.kill(pid, signal.SIGKILL)
    return up.pid, started


def engine_up(proj, env) -> subprocess.CompletedProcess:
    return subprocess.run(["pulumi", "--non-interactive", "up", "--yes", "--stack", "dev"],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=180)


def test_a_killed_up_leaves_its_lock_and_only_its_run_is_cleared(project):
    proj, backend, env = project
    pid, started = killed_up(proj, env)
    locks = backend.store.read("lockprobe", "dev")
    print(f"\n{backend.store.where}: locks after the kill: {[x.as_json() for x in locks]}")
    assert [(x.pid, x.hostname) for x in locks] == [(pid, socket.gethostname())]
    assert [x.where for x in locks] == backend.raw_locks()
    engine = Engine("dev", proj)
    pending = [op["type"] for op in engine.export().get("pending_operations") or []]
    assert pending == ["creating"], pending

    # Another engine run (pid) on the same host: not the dead leader's, kept; the engine refuses.
    other = DeadRun(EngineRun(host=socket.gethostname(), started=started, pids=(pid + 1,)))
    verdict = decide(locks, [other])
    assert verdict.blocked and not verdict.clear
    refused = engine_up(proj, env)
    assert refused.returncode != 0 and "currently locked" in refused.stderr + refused.stdout

    # A person's lock beside it: the dead leader's run's verdict clears only its own lock,
    # through the backend's storage; the person's stays, and the engine still refuses.
    foreign = backend.write_foreign(FOREIGN)
    locks = backend.store.read("lockprobe", "dev")
    assert sorted(x.pid for x in locks) == sorted([1, pid])
    dead = DeadRun(EngineRun(host=socket.gethostname(), started=started, pids=(pid,)))
    verdict = decide(locks, [dead])
    assert [x.pid for x in verdict.clear] == [pid] and [x.pid for x in verdict.keep] == [1]
    for lock in verdict.clear:
        assert backend.store.remove(lock) == ""
    assert backend.raw_locks() == [foreign]
    refused = engine_up(proj, env)
    out = refused.stderr + refused.stdout
    assert refused.returncode != 0 and "currently locked by 1 lock(s)" in out, out
    assert "operator@ops-laptop (pid 1)" in out and f"(pid {pid})" not in out

    # The person's process is gone (the operator says so): `pulumi cancel`, as documented.
    subprocess.run(["pulumi", "--non-interactive", "cancel", "--yes", "--stack", "dev"],
                   cwd=proj, env=env, check=True, capture_output=True, timeout=60)
    assert backend.raw_locks() == []
    dropped = engine.drop_pending_operations()
    assert dropped == ["slow (creating)"], dropped
    assert not engine.export().get("pending_operations")
    # The rerun creates the step again (`sleep 60` is too long for a test: the program is
    # swapped for a quick one, as the recovery's steps are quick to rerun).
    (proj / "__main__.py").write_text(PROGRAM.replace("sleep 60", "true"))
    done = engine_up(proj, env)
    assert done.returncode == 0, done.stdout + done.stderr
    after = engine.export()
    assert not after.get("pending_operations")
    names = sorted(r["urn"].rsplit("::", 1)[-1] for r in after["resources"]
                   if r["type"] == "command:local:Command")
    assert names == ["quick", "slow"]
    assert backend.store.read("lockprobe", "dev") == [] and backend.raw_locks() == []



def test_a_password_written_in_the_url_reaches_psql_through_a_private_passfile(state_db):
    """Operators are told to keep the password out of the URL; one written there anyway must
    still work and stay out of psql's environment and arguments (cli/stacklock.py writes it to
    a 0600 passfile for the call): the lab's real server, SCRAM over TLS verify-full, with
    PGPASSWORD set to a wrong password in the caller's environment, as a stale shell might."""
    password = state_db.passfile.read_text().strip().split(":")[4]
    import base64

    table = f"lockprobe_{secrets.token_hex(4)}"
    key = f"{state_db.database}/.pulumi/locks/organization/lockprobe/dev/00000000-foreign.json"
    blob = base64.b64encode(json.dumps(FOREIGN).encode()).decode()
    lab_postgres.psql(f"CREATE TABLE {table} (key text PRIMARY KEY, data jsonb); ALTER TABLE "
                      f"{table} OWNER TO {state_db.user}; INSERT INTO "
                      f"{table} VALUES ('{key}', json_build_object('data', '{blob}'))")
    parts = urlsplit(state_db.backend_url(table=table))
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "passfile"]
    url = urlunsplit(parts._replace(netloc=f"{state_db.user}:{password}@{parts.hostname}:"
                                           f"{parts.port}", query=urlencode(query)))
    # (booleans first: a failed assertion prints its operands, and one of them is a password)
    carried, no_passfile = password in url, str(state_db.passfile) not in url
    assert carried and no_passfile, "the URL does not carry the password alone"
    seen: list[tuple[list, dict]] = []

    def run(argv, **kw):
        seen.append((argv, kw["env"]))
        return subprocess.run(argv, **kw)

    saved = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = "not-the-password"
    try:
        store = PostgresLocks(lock_store(url).target, run)
        (lock,) = store.read("lockprobe", "dev")            # authenticated, read the row
    finally:
        os.environ.pop("PGPASSWORD") if saved is None else os.environ.update(PGPASSWORD=saved)
    assert (lock.where, lock.pid, lock.hostname) == (key, 1, "ops-laptop")
    os.environ["PGPASSWORD"] = "not-the-password"
    try:
        assert store.remove(lock) == ""                      # and deleted it
        assert store.read("lockprobe", "dev") == []
    finally:
        os.environ.pop("PGPASSWORD") if saved is None else os.environ.update(PGPASSWORD=saved)
    assert len(seen) == 3
    for argv, env in seen:
        in_argv = any(password in a for a in argv)
        in_env = any(password in v for v in env.values())
        assert not in_argv and not in_env, "the password reached psql's argv or environment"
        assert "PGPASSWORD" not in env
        assert not os.path.exists(env["PGPASSFILE"])
