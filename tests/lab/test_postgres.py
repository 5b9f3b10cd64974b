"""lab/postgres.py: the lab's shared state database is a real PostgreSQL (Debian's package) on a
lab host of its own; it serves over TLS that verifies against the lab's CA, with SCRAM password
auth for the role `pulumi` only; another lab host reaches it from its own address; the password
appears in no process's argv, no log and no output; `up` is idempotent and `Lab.down` leaves
nothing of it behind."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import Lab, postgres
from lab.hosts import REPO, _alive


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    Lab().down()  # a crashed earlier run holds the names
    lab = Lab(tmp_path_factory.mktemp("pg-lab"))
    lab.up(masters=1, nodes=1)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def db(small_lab):
    t0 = time.monotonic()
    db = postgres.up(small_lab)
    print(f"\nstate database up in {time.monotonic() - t0:.2f}s: {db.versions}")
    return db


def password_of(db) -> str:
    return db.passfile.read_text().strip().rsplit(":", 1)[1]


def psql_as_role(conninfo: str, sql: str, passfile: Path | None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"}
    if passfile is not None:
        env["PGPASSFILE"] = str(passfile)
    return subprocess.run(["psql", "-X", "-At", "-w", conninfo, "-c", sql], env=env,
                          capture_output=True, text=True, timeout=30)


def conninfo(db, sslmode: str = "verify-full") -> str:
    return (f"host={db.address} port={db.port} dbname={db.database} user={db.user} "
            f"sslmode={sslmode} sslrootcert={db.ca_file} connect_timeout=5")


def test_runs_as_postgres_in_its_own_host(db):
    """The postmaster runs as `postgres`, in the db host's network namespace (not the root one),
    from Debian's package, and answers on the host's address."""
    status = Path(f"/proc/{db.pid}/status").read_text()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert int(uid) == postgres._postgres_ids()[0]
    assert os.stat(f"/proc/{db.pid}/ns/net").st_ino == os.stat(f"/run/netns/{postgres.HOST}").st_ino
    assert os.stat(f"/proc/{db.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    assert db.versions.get("postgresql", "").startswith("15+"), db.versions
    assert postgres.ready()


def test_db_host_has_no_ipv6(db):
    """Like every lab host, no IPv6 in its namespace: its link-local chatter is multicast, which
    the bridge floods to every host, and the e2e tests count every frame sent to a dead master0
    (with it, test_watch saw "1 packet" to the old master0 twice in a row)."""
    addrs = subprocess.run(["ip", "-n", postgres.HOST, "-o", "addr"], capture_output=True,
                           text=True, check=True).stdout
    assert "inet6" not in addrs, addrs
    assert f"inet {postgres.ADDRESS}/24" in addrs


def test_tls_verified_and_scram_only(small_lab, db):
    """With the pgpass file over verify-full: connected, TLS on, authenticated by SCRAM. A wrong
    password and a connection without TLS are refused; the stored password is a SCRAM verifier."""
    ok = psql_as_role(conninfo(db), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                      db.passfile)
    assert (ok.returncode, ok.stdout.strip()) == (0, "t"), ok.stderr
    log = postgres._paths(small_lab).log.read_text()
    assert 'identity="pulumi" method=scram-sha-256' in log
    wrong = db.passfile.with_name("pgpass-wrong")
    wrong.write_text(f"{db.address}:{db.port}:{db.database}:{db.user}:not-the-password\n")
    wrong.chmod(0o600)
    try:
        bad = psql_as_role(conninfo(db), "SELECT 1", wrong)
    finally:
        wrong.unlink()
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr, bad.stderr
    plain = psql_as_role(conninfo(db, "disable"), "SELECT 1", db.passfile)
    assert plain.returncode != 0 and "no encryption" in plain.stderr, plain.stderr
    stored = postgres.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'pulumi'", "postgres")
    assert stored.startswith("SCRAM-SHA-256$4096:")


def test_another_lab_host_reaches_it_from_its_own_address(small_lab, db):
    """A process on a cluster host (its namespaces, its private /root with a 0600 .pgpass)
    connects over the bridge; the server sees the host's address."""
    host = small_lab.nodes()[0]
    small_lab.run(host.ip, "umask 077; cat > /root/.pgpass", input=db.passfile.read_text())
    small_lab.run(host.ip, "cat > /root/state-ca.crt", input=db.ca_file.read_text())
    done = small_lab.run(host.ip, f"psql -X -At -w 'host={db.address} dbname={db.database} "
                                  f"user={db.user} sslmode=verify-full sslrootcert=/root/state-ca.crt' "
                                  "-c 'SELECT host(inet_client_addr())'", check=False)
    assert (done.returncode, done.stdout.strip()) == (0, host.ip), done.stderr


def test_password_in_no_argv_log_or_output(small_lab, db):
    """The password is only in the 0600 pgpass file: not in any process's command line, not in
    the server's log, not in the backend URL, not in `python -m lab postgres up|status`."""
    password = password_of(db)
    assert len(password) >= 24
    assert oct(db.passfile.stat().st_mode & 0o777) == "0o600"
    out = subprocess.run([sys.executable, "-m", "lab", "--state-dir", str(small_lab.state),
                          "postgres", "up"], cwd=REPO, capture_output=True, text=True, timeout=60)
    out2 = subprocess.run([sys.executable, "-m", "lab", "--state-dir", str(small_lab.state),
                           "postgres", "status"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert out.returncode == 0 and out2.returncode == 0, out.stderr + out2.stderr
    assert '"backend_url": "postgres://pulumi@' in out.stdout
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert password.encode() not in cmdline, f"pid {pid}"
    server_log = postgres._paths(small_lab).log.read_text()
    for text in (server_log, db.backend_url(), out.stdout + out.stderr, out2.stdout + out2.stderr):
        assert password not in text


def test_up_is_idempotent(small_lab, db):
    """A second `up` keeps the running server (same postmaster) and is quick."""
    t0 = time.monotonic()
    again = postgres.up(small_lab)
    assert again.pid == db.pid and again.backend_url() == db.backend_url()
    assert time.monotonic() - t0 < 5


def test_lab_down_removes_it(small_lab, db):
    """`Lab.down` stops the server and removes its host, its directory and the lab's pgpass/CA."""
    pid = db.pid
    removed = small_lab.down()
    assert any(r.startswith(f"state database {postgres.HOST}") for r in removed), removed
    assert not _alive(pid)  # (a zombie until its parent, not us, reaps it)
    assert postgres.HOST not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                               text=True).stdout.split()
    assert not postgres.SERVER_DIR.exists()
    assert not db.passfile.exists() and not db.ca_file.exists()
