"""cli/stacklock.py: which of the engine's stack locks a new `cli watch` leader may clear (only an
engine run of a leader whose lease expired, matched by hostname and pid, or by hostname and a
lock written after the run started when the pid was not recorded), the lock files of a file://
backend as pulumi v3.274.0 writes them, the engine's own list of locks, and the engine run record
the leader keeps in the Lease (carried over to the next leader)."""

from __future__ import annotations

import json

import pytest

from cli.lease import Election
from cli.stacklock import (ENGINE_RUN, DeadRun, EngineRun, Pending, StackLock, decide,
                           file_backend_root, parse_locked_error, parse_time, read_locks,
                           without_pending)
from tests.unit.test_cli_lease import NAME, SETTINGS, Clock, FakeApiserver

RUN = EngineRun(host="srl7-201", started="2026-12-06T18:40:00.000000Z", pids=(4242,),
                master0="198.18.7.12", down_hosts=("198.18.7.11",))
DEAD = DeadRun(RUN, "srl7-201_1000_0badcafe", "its lease expired")


def lock(pid=4242, host="srl7-201", ts="2026-12-06T18:40:01.123456789Z", user="root"):
    return StackLock(f"/state/.pulumi/locks/organization/sealer-registry/prod/{pid}.json", pid,
                     user, host, ts)


# ------------------------------------------------------------------------------ the decision


def test_no_lock_clears_nothing_and_blocks_nothing():
    verdict = decide([], [DEAD])
    assert verdict.clear == () and not verdict.blocked


def test_the_old_leaders_engine_lock_is_cleared():
    """Same hostname and the engine pid the old leader recorded in the Lease."""
    verdict = decide([lock()], [DEAD])
    assert verdict.clear == (lock(),) and not verdict.blocked
    assert "pid 4242 is its engine" in verdict.why


def test_a_lock_of_another_pid_on_the_old_leaders_host_is_kept():
    """An operator's `pulumi up` on the old leader's machine: same host, another pid."""
    verdict = decide([lock(pid=5555)], [DEAD])
    assert verdict.clear == () and verdict.blocked
    assert "pid 5555" in verdict.why and "left alone" in verdict.why


def test_a_lock_of_another_host_is_kept_even_with_the_same_pid():
    verdict = decide([lock(host="laptop")], [DEAD])
    assert verdict.blocked and verdict.clear == ()


def test_without_a_previous_leader_every_lock_is_kept():
    """No dead run known (a leader that created the Lease, or one whose predecessor recorded
    nothing): nothing is cleared, whoever wrote the lock."""
    verdict = decide([lock()], [])
    assert verdict.blocked and "none known" in verdict.why


def test_pid_not_recorded_yet_a_lock_written_after_the_run_started_on_its_host_is_cleared():
    """The old leader died between starting its engine and recording the pid: the lock written
    on its host after the run started (both by that host's clock) is its engine's."""
    dead = DeadRun(EngineRun(host="srl7-201", started="2026-12-06T18:40:00.500000Z"))
    assert decide([lock(ts="2026-12-06T18:40:00.700000001Z")], [dead]).clear
    before = decide([lock(ts="2026-12-06T18:39:59.999999999Z")], [dead])
    assert before.blocked and not before.clear
    assert decide([lock(host="other", ts="2026-12-06T18:40:01Z")], [dead]).blocked


def test_with_a_recorded_pid_the_timestamp_does_not_count():
    """Once the pid is recorded, a later lock of another pid on that host is not its engine."""
    assert decide([lock(pid=1, ts="2026-12-06T18:50:00Z")], [DEAD]).blocked


def test_one_foreign_lock_blocks_even_when_the_others_may_go():
    verdict = decide([lock(), lock(pid=7)], [DEAD])
    assert verdict.clear == (lock(),) and verdict.keep == (lock(pid=7),) and verdict.blocked


def test_our_own_killed_run_and_the_previous_leaders_both_count():
    own = DeadRun(EngineRun(host="srl7-202", started="2026-12-06T18:41:00Z", pids=(99,)))
    verdict = decide([lock(), lock(pid=99, host="srl7-202")], [DEAD, own])
    assert len(verdict.clear) == 2 and not verdict.blocked


@pytest.mark.parametrize("text, ok", [
    ("2026-12-06T18:40:01.123456789Z", True),      # Go's RFC3339Nano
    ("2026-12-06T18:40:01.1+01:00", True),
    ("2026-12-06T18:40:01Z", True),
    ("2026-12-06 18:40:01", False),
    ("", False),
    ("yesterday", False),
])
def test_parse_time_reads_go_and_our_timestamps(text, ok):
    assert (parse_time(text) is not None) is ok


def test_an_offset_is_honoured():
    assert parse_time("2026-12-06T19:40:00+01:00") == parse_time("2026-12-06T18:40:00Z")


# ------------------------------------------------------------------------------ the record


def test_the_engine_run_record_round_trips_and_bad_text_is_none():
    assert EngineRun.from_text(RUN.to_text()) == RUN
    for bad in (None, "", "{", "[]", '{"pids": [1]}', '{"host": "h", "pids": ["x"]}'):
        assert EngineRun.from_text(bad) is None


def test_the_record_holds_no_secret_only_hosts_pids_and_times():
    assert set(json.loads(RUN.to_text())) == {"host", "started", "pids", "master0", "down_hosts",
                                               "state"}


# ------------------------------------------------------------------------------ the Lease


def test_the_leaders_engine_run_is_in_the_lease_and_the_next_leader_sees_it():
    """a records its run with its renews; a stops renewing; b takes over after the lease
    duration and finds a's record (``took_over``); the record stays in the Lease (keys b does
    not write are kept) until b records its own run."""
    server, clock = FakeApiserver(), Clock()
    runs = {"a": RUN, "b": None}

    def notes(who):
        return lambda: {} if runs[who] is None else {ENGINE_RUN: runs[who].to_text()}

    a = Election(server.client("a"), "a", SETTINGS, NAME, clock=clock, wall=clock.wall,
                 annotations=notes("a"))
    b = Election(server.client("b"), "b", SETTINGS, NAME, clock=clock, wall=clock.wall,
                 annotations=notes("b"))
    assert a.try_acquire_or_renew().ok
    assert server.lease["metadata"]["annotations"][ENGINE_RUN] == RUN.to_text()
    assert not b.try_acquire_or_renew().ok and b.took_over is None
    clock.advance(SETTINGS.lease_duration + 0.1)
    got = b.try_acquire_or_renew()
    assert got.ok and got.why == "took over from a"
    assert b.took_over == ("a", {ENGINE_RUN: RUN.to_text()})
    assert server.lease["metadata"]["annotations"][ENGINE_RUN] == RUN.to_text()
    mine = EngineRun(host="srl7-202", started="2026-12-06T18:41:00Z")
    runs["b"] = mine
    assert b.try_acquire_or_renew().ok
    assert server.lease["metadata"]["annotations"][ENGINE_RUN] == mine.to_text()


def test_a_renew_of_our_own_lease_is_no_take_over():
    server, clock = FakeApiserver(), Clock()
    a = Election(server.client("a"), "a", SETTINGS, NAME, clock=clock, wall=clock.wall)
    assert a.try_acquire_or_renew().ok and a.try_acquire_or_renew().ok
    assert a.took_over is None


# ------------------------------------------------------------------------------ backend files


def test_file_backend_root_only_for_file_urls(tmp_path):
    assert file_backend_root(f"file://{tmp_path}") == tmp_path
    assert file_backend_root(f"file://{tmp_path}?no_tmp_dir=true") == tmp_path
    assert file_backend_root("s3://bucket/state") is None
    assert file_backend_root("postgres://u@h/db") is None
    assert file_backend_root(None) is None


def test_read_locks_reads_the_project_layout_and_skips_garbage(tmp_path):
    """pulumi v3.274.0 pkg/backend/diy/lock.go: <root>/.pulumi/locks/organization/<project>/
    <stack>/<uuid>.json with pid, username, hostname, timestamp."""
    d = tmp_path / ".pulumi/locks/organization/sealer-registry/prod"
    d.mkdir(parents=True)
    (d / "a1.json").write_text(json.dumps({"pid": 4242, "username": "root",
                                           "hostname": "srl7-201",
                                           "timestamp": "2026-12-06T18:40:01.1Z"}))
    (d / "b2.json").write_text("{not json")
    (tmp_path / ".pulumi/locks/organization/sealer-registry/other").mkdir()
    (tmp_path / ".pulumi/locks/organization/sealer-registry/other/c.json").write_text(
        json.dumps({"pid": 1, "username": "u", "hostname": "h", "timestamp": ""}))
    locks = read_locks(tmp_path, "sealer-registry", "prod")
    assert [(x.pid, x.hostname, x.where) for x in locks] == [(4242, "srl7-201", str(d / "a1.json"))]
    assert read_locks(tmp_path, "sealer-registry", "none") == []


def test_the_engines_refusal_names_the_locks():
    text = ("error: the stack is currently locked by 1 lock(s). Either wait for the other "
            "process(es) to end or delete the lock file with `pulumi cancel`.\n"
            "  s3://b/.pulumi/locks/organization/sealer-registry/prod/x.json: created by "
            "root@srl7-201 (pid 4242) at 2026-12-06T18:40:01Z\n")
    assert parse_locked_error(text) == [
        StackLock("s3://b/.pulumi/locks/organization/sealer-registry/prod/x.json", 4242, "root",
                  "srl7-201", "2026-12-06T18:40:01Z")]
    assert parse_locked_error("error: something else") == []


def test_pending_operations_are_named_and_removed():
    dep = {"resources": [{"urn": "u1"}], "pending_operations": [
        {"resource": {"urn": "urn:pulumi:s::p::command:remote:Command::node-198.18.7.21"},
         "type": "updating"}]}
    assert Pending.of(dep).describe() == ["node-198.18.7.21 (updating)"]
    assert without_pending(dep) == {"resources": [{"urn": "u1"}]}
    assert Pending.of({"resources": []}).operations == []


def test_a_truncated_checkpoint_is_restored_from_its_backup_only(tmp_path):
    from cli.stacklock import repair_checkpoint

    d = tmp_path / ".pulumi/stacks/sealer-registry"
    d.mkdir(parents=True)
    assert repair_checkpoint(tmp_path, "sealer-registry", "prod") == ""
    (d / "prod.json").write_text('{"version": 3}')
    assert repair_checkpoint(tmp_path, "sealer-registry", "prod") == ""
    (d / "prod.json").write_text('{"version": 3, "check')
    assert "not repaired" in repair_checkpoint(tmp_path, "sealer-registry", "prod")
    (d / "prod.json.bak").write_text('{"version": 3, "old": true}')
    assert "restored" in repair_checkpoint(tmp_path, "sealer-registry", "prod")
    assert json.loads((d / "prod.json").read_text()) == {"version": 3, "old": True}


# ------------------------------------------------------------------------------ postgres:// backends

from cli.stacklock import (LockStoreError, PostgresLocks, lock_store, locks_of_rows,  # noqa: E402
                           postgres_target, write_passfile)
import base64  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402

LAB_URL = ("postgres://pulumi@198.18.4.5:5432/pulumi?sslmode=verify-full"
           "&sslrootcert=/lab/ca.crt&passfile=/lab/pgpass&connect_timeout=5")
PREFIX = "pulumi/.pulumi/locks/organization/sealer-registry/prod/"


def test_a_postgres_url_becomes_libpq_variables_the_table_and_the_key_prefix():
    """pulumi v3.274.0 diy/postgres/bucket.go + backend.go, lib/pq v1.12.3 convertURL: user,
    host, port and dbname from the URL, each known parameter as its PG* variable, `table`
    taken out, keys prefixed with the path."""
    t = postgres_target(LAB_URL)
    assert t.env == {"PGUSER": "pulumi", "PGHOST": "198.18.4.5", "PGPORT": "5432",
                     "PGDATABASE": "pulumi", "PGSSLMODE": "verify-full",
                     "PGSSLROOTCERT": "/lab/ca.crt", "PGPASSFILE": "/lab/pgpass",
                     "PGCONNECT_TIMEOUT": "5"}
    assert (t.table, t.prefix) == ("pulumi_state", "pulumi/")
    assert t.where == "postgres://198.18.4.5:5432/pulumi?table=pulumi_state"
    other = postgres_target("postgresql://u@db/state?table=team.pulumi_state")
    assert (other.table, other.prefix) == ("team.pulumi_state", "state/")


def test_lib_pqs_default_sslmode_is_kept_unless_the_environment_sets_one(monkeypatch):
    monkeypatch.delenv("PGSSLMODE", raising=False)
    assert postgres_target("postgres://u@db/p").env["PGSSLMODE"] == "require"
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    assert "PGSSLMODE" not in postgres_target("postgres://u@db/p").env


@pytest.mark.parametrize("url", ["postgres://pulumi:s3cr%40t@db:5432/pulumi",
                                 "postgres://pulumi@db:5432/pulumi?password=s3cr%40t"])
def test_a_password_in_the_url_is_kept_apart_from_the_environment_and_messages(url):
    t = postgres_target(url)
    assert t.password == "s3cr@t"
    assert "s3cr" not in str(t.env) and "s3cr" not in t.where and "pulumi@" not in t.where
    assert "s3cr" not in repr(t)


def test_a_password_with_a_line_break_is_refused():
    with pytest.raises(LockStoreError, match="line break"):
        postgres_target("postgres://u:a%0Ab@db/p")


def test_the_passfile_escapes_what_libpq_unescapes_and_is_private(tmp_path):
    path = write_passfile(str(tmp_path), "a:b\\c")
    assert open(path).read() == "*:*:*:*:a\\:b\\\\c\n"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_run_time_parameters_go_through_pgoptions_and_pq_extensions_are_dropped(monkeypatch):
    monkeypatch.delenv("PGOPTIONS", raising=False)
    t = postgres_target("postgres://u@db/p?search_path=team,public&keepalives_idle=30"
                        "&binary_parameters=yes&application_name=watch")
    assert t.env["PGOPTIONS"] == "-c search_path=team,public"
    assert t.env["PGAPPNAME"] == "watch" and "keepalives_idle" not in str(t.env)


@pytest.mark.parametrize("url", ["postgres://u@db/p?table=x;drop table y",
                                 "postgres://u@db/p?table=a.b.c",
                                 "postgres://u@db/p?sslinline=true"])
def test_what_psql_cannot_do_as_the_engine_does_is_refused(url):
    with pytest.raises(LockStoreError):
        postgres_target(url)


@pytest.mark.parametrize("url", [None, "", "file:///state", "s3://b/x", "https://db/"])
def test_other_backends_are_no_postgres_target(url):
    assert postgres_target(url) is None


def test_lock_store_picks_the_backends_own_storage(tmp_path):
    assert type(lock_store(f"file://{tmp_path}")).__name__ == "FileLocks"
    assert type(lock_store(LAB_URL)).__name__ == "PostgresLocks"
    assert type(lock_store("s3://bucket/state?region=eu-west-1")).__name__ == "S3Locks"
    assert lock_store("gs://bucket/state") is None and lock_store(None) is None


def blob_of(pid=4242, host="srl7-201", ts="2026-12-06T18:40:01.123456789Z") -> str:
    return base64.b64encode(json.dumps({"pid": pid, "username": "root", "hostname": host,
                                        "timestamp": ts}).encode()).decode()


def test_lock_rows_directly_in_the_stacks_lock_folder_are_read():
    rows = [{"key": PREFIX + "a1.json", "data": blob_of()},
            {"key": PREFIX + "nested/b.json", "data": blob_of(1)},
            {"key": PREFIX + "c.txt", "data": blob_of(2)},
            {"key": PREFIX + "d.json", "data": "%%% not base64"},
            {"key": PREFIX + "e.json", "data": base64.b64encode(b"{").decode()},
            {"key": "pulumi/.pulumi/locks/organization/sealer-registry/prod2/f.json",
             "data": blob_of(3)},
            {"key": None, "data": blob_of(4)}]
    locks = locks_of_rows(rows, (PREFIX,))
    assert [(x.where, x.pid, x.hostname) for x in locks] == [(PREFIX + "a1.json", 4242, "srl7-201")]
    assert locks[0].blob == blob_of()
    assert locks_of_rows("not a list", (PREFIX,)) == []


class FakePsql:
    """Records psql's argv, environment and stdin; answers from a dict of rows."""

    def __init__(self, rows: dict[str, str], fail: str = ""):
        self.rows, self.fail, self.calls = dict(rows), fail, []

    def __call__(self, argv, input, env, **kw):
        passfile = env.get("PGPASSFILE", "")
        seen = (open(passfile).read(), os.stat(passfile).st_mode & 0o777) if os.path.isfile(
            passfile) else None
        self.calls.append((argv, input, env, seen))
        if self.fail:
            return subprocess.CompletedProcess(argv, 2, "", self.fail)
        v = dict(a.split("=", 1) for a in argv[argv.index("-v") + 2:][1::2])
        if input.startswith("SELECT"):
            found = [{"key": k, "data": d} for k, d in sorted(self.rows.items())
                     if k.startswith(v["new"]) or k.startswith(v["old"])]
            return subprocess.CompletedProcess(argv, 0, json.dumps(found) + "\n", "")
        out = ""
        if self.rows.get(v["key"]) == v["blob"]:
            del self.rows[v["key"]]
            out = v["key"] + "\n"
        out += f"{1 if v['key'] in self.rows else 0}\n"
        return subprocess.CompletedProcess(argv, 0, out, "")


def test_postgres_locks_are_read_and_only_the_chosen_row_deleted_with_no_secret_in_argv():
    psql = FakePsql({PREFIX + "a1.json": blob_of(), PREFIX + "b2.json": blob_of(777),
                     "pulumi/.pulumi/stacks/sealer-registry/prod.json": "e30="})
    store = PostgresLocks(postgres_target(LAB_URL.replace("pulumi@", "pulumi:pw@")), psql)
    locks = store.read("sealer-registry", "prod")
    assert [x.pid for x in locks] == [4242, 777]
    verdict = decide(locks, [DEAD])
    assert [x.pid for x in verdict.clear] == [4242] and [x.pid for x in verdict.keep] == [777]
    assert store.remove(verdict.clear[0]) == ""
    assert sorted(psql.rows) == [PREFIX + "b2.json",
                                 "pulumi/.pulumi/stacks/sealer-registry/prod.json"]
    for argv, sql, env, passfile in psql.calls:
        assert argv[0] == "psql" and "-w" in argv
        assert not any("pw" in a or "postgres://" in a for a in argv), argv
        assert "PGPASSWORD" not in env and env["PGHOST"] == "198.18.4.5"
        assert passfile == ("*:*:*:*:pw\n", 0o600)     # the URL's password, in a private file
        assert not os.path.exists(env["PGPASSFILE"])    # ... gone once psql has answered
        assert "LIKE" not in sql and "pulumi_state" in sql


def test_the_urls_password_replaces_an_inherited_pgpassword_and_none_is_added_otherwise(
        monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-the-shell")
    psql = FakePsql({})
    PostgresLocks(postgres_target("postgres://u:pw@db/p"), psql).read("sealer-registry", "prod")
    PostgresLocks(postgres_target("postgres://u@db/p"), psql).read("sealer-registry", "prod")
    (_, _, with_pw, seen), (_, _, without, _) = psql.calls
    assert "PGPASSWORD" not in with_pw and seen == ("*:*:*:*:pw\n", 0o600)
    assert without["PGPASSWORD"] == "from-the-shell" and "PGPASSFILE" not in without


def test_a_row_gone_already_counts_as_removed_a_rewritten_one_does_not():
    psql = FakePsql({PREFIX + "a1.json": blob_of()})
    store = PostgresLocks(postgres_target(LAB_URL), psql)
    (mine,) = store.read("sealer-registry", "prod")
    psql.rows[PREFIX + "a1.json"] = blob_of(ts="2026-12-06T19:00:00Z")
    assert "changed since it was read" in store.remove(mine)
    assert PREFIX + "a1.json" in psql.rows
    del psql.rows[PREFIX + "a1.json"]
    assert store.remove(mine) == ""


def test_a_psql_failure_is_a_lock_store_error_naming_the_backend_not_the_password():
    store = PostgresLocks(postgres_target(LAB_URL), FakePsql({}, fail="could not connect"))
    with pytest.raises(LockStoreError) as err:
        store.read("sealer-registry", "prod")
    assert "198.18.4.5" in str(err.value) and "could not connect" in str(err.value)


def test_no_psql_installed_is_a_lock_store_error():
    def missing(*a, **k):
        raise FileNotFoundError("psql")

    with pytest.raises(LockStoreError, match="psql is not installed"):
        PostgresLocks(postgres_target(LAB_URL), missing).read("sealer-registry", "prod")


# ------------------------------------------------------------------------------------- s3://

from botocore.stub import Stubber  # noqa: E402

from cli.stacklock import S3Locks, s3_target  # noqa: E402


def test_an_s3_url_is_read_as_the_engines_driver_reads_it():
    t = s3_target("s3://state-bucket/teams/ops?endpoint=https://s3.lab:7070&use_path_style=true"
                  "&region=us-east-1&awssdk=v2")
    assert (t.bucket, t.prefix, t.endpoint, t.region, t.path_style) == (
        "state-bucket", "teams/ops/", "https://s3.lab:7070", "us-east-1", True)
    assert t.key(".pulumi/locks/x.json") == "teams/ops/.pulumi/locks/x.json"
    assert t.where == "s3://state-bucket/teams/ops/?endpoint=https://s3.lab:7070"
    plain = s3_target("s3://b")
    assert (plain.prefix, plain.endpoint, plain.path_style, plain.region) == ("", None, False, None)


@pytest.mark.parametrize("query, endpoint", [
    ("endpoint=minio:9000", "https://minio:9000"),                    # pulumi adds the scheme
    ("endpoint=minio:9000&disableSSL=true", "http://minio:9000"),     # the SDK v1 name
    ("endpoint=https://minio:9000&disable_https=true", "http://minio:9000"),
    ("endpoint=http://minio:9000", "http://minio:9000"),
])
def test_s3_endpoint_schemes_follow_pulumis_legacy_translation(query, endpoint):
    assert s3_target(f"s3://b?{query}").endpoint == endpoint


def test_the_v1_path_style_name_counts_too():
    assert s3_target("s3://b?s3ForcePathStyle=true").path_style
    assert not s3_target("s3://b?use_path_style=false").path_style


@pytest.mark.parametrize("url, word", [
    ("s3://b?sslmode=require", "sslmode"),                 # not a parameter of the S3 driver
    ("s3://b?role=arn:aws:iam::1:role/x", "role"),
    ("s3:///prefix", "no bucket"),
])
def test_what_the_s3_store_cannot_follow_is_refused_naming_it(url, word):
    with pytest.raises(LockStoreError, match=word):
        s3_target(url)


def stubbed(url="s3://bucket/pre?endpoint=https://s3.lab:7070&use_path_style=true&region=us-east-1"):
    import boto3
    client = boto3.session.Session(aws_access_key_id="AKIDLAB", aws_secret_access_key="not-used"
                                   ).client("s3", endpoint_url="https://s3.lab:7070",
                                            region_name="us-east-1")
    return S3Locks(s3_target(url), client), Stubber(client)


def body(doc: dict):
    import io
    from botocore.response import StreamingBody
    raw = json.dumps(doc).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def test_s3_locks_are_listed_in_both_lock_folders_and_read_with_their_etag():
    store, stub = stubbed()
    new = "pre/.pulumi/locks/organization/proj/dev/"
    doc = {"pid": 4242, "username": "root", "hostname": "srl7-201", "timestamp": "2026-12-06T18:40:01Z"}
    stub.add_response("list_objects_v2", {"Contents": [{"Key": new + "u1.json"}, {"Key": new + "notes.txt"}],
                                          "IsTruncated": False},
                      {"Bucket": "bucket", "Prefix": new, "Delimiter": "/"})
    stub.add_response("get_object", {"Body": body(doc), "ETag": '"e1"'},
                      {"Bucket": "bucket", "Key": new + "u1.json"})
    stub.add_response("list_objects_v2", {"IsTruncated": False},
                      {"Bucket": "bucket", "Prefix": "pre/.pulumi/locks/dev/", "Delimiter": "/"})
    with stub:
        locks = store.read("proj", "organization/proj/dev")
    assert [(lk.where, lk.pid, lk.hostname, lk.blob) for lk in locks] == [
        (new + "u1.json", 4242, "srl7-201", '"e1"')]
    stub.assert_no_pending_responses()


def test_an_s3_lock_is_deleted_only_while_its_etag_is_the_one_read():
    store, stub = stubbed()
    lock = StackLock("pre/.pulumi/locks/organization/proj/dev/u1.json", 4242, "root", "h", "t", '"e1"')
    stub.add_response("head_object", {"ETag": '"e2"'}, {"Bucket": "bucket", "Key": lock.where})
    with stub:
        assert "changed since it was read" in store.remove(lock)
    stub.add_response("head_object", {"ETag": '"e1"'}, {"Bucket": "bucket", "Key": lock.where})
    stub.add_response("delete_object", {}, {"Bucket": "bucket", "Key": lock.where})
    with stub:
        assert store.remove(lock) == ""
    stub.add_client_error("head_object", service_error_code="404", http_status_code=404,
                          expected_params={"Bucket": "bucket", "Key": lock.where})
    with stub:
        assert store.remove(lock) == ""     # gone already
    stub.assert_no_pending_responses()


def test_an_s3_failure_is_a_lock_store_error_naming_the_backend_and_the_code():
    store, stub = stubbed()
    stub.add_client_error("list_objects_v2", service_error_code="AccessDenied",
                          service_message="Access Denied", http_status_code=403)
    with stub, pytest.raises(LockStoreError, match=r"s3://bucket/pre/.*AccessDenied"):
        store.read("proj", "dev")
