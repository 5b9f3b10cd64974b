"""cli/lease.py's election against a fake apiserver (one Lease, resourceVersions, 409 on a stale
one, requests that fail on demand) and a fake clock: nothing here sleeps."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from cli.lease import (Election, Elector, LeaseSettings, LeaseSettingsError, Record, Reply,
                       lease_name, micro_time)

NAME = "sealer-registry-watch-prod"
SETTINGS = LeaseSettings(lease_duration=15, renew_deadline=10, retry_period=2)


class Clock:
    def __init__(self):
        self.t = 1000.0
        self.epoch = datetime(2026, 12, 6, 6, 0, tzinfo=timezone.utc)

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        # A wall clock far off the monotonic one: the election must never mix the two.
        return self.epoch + timedelta(seconds=self.t)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeApiserver:
    """One Lease, as the apiserver keeps it: POST on an existing name -> 409, PUT with a stale
    resourceVersion -> 409, every write a new resourceVersion."""

    def __init__(self):
        self.lease: dict | None = None
        self.rv = 100
        self.down: set[str] = set()   # clients whose requests fail (a partition)
        self.log: list[tuple[str, str, int]] = []

    def client(self, who: str) -> "FakeApi":
        return FakeApi(self, who)

    def handle(self, who: str, method: str, obj: dict | None) -> Reply:
        if who in self.down:
            self.log.append((who, method, 0))
            return Reply(0, detail="https://198.18.9.12:6443: timed out")
        status, out = self._handle(method, obj)
        self.log.append((who, method, status))
        return Reply(status, out, f"{method} answered {status}", "https://198.18.9.12:6443")

    def _handle(self, method: str, obj: dict | None) -> tuple[int, dict | None]:
        if method == "GET":
            return (404, None) if self.lease is None else (200, copy.deepcopy(self.lease))
        assert obj is not None
        if method == "POST":
            if self.lease is not None:
                return 409, {"reason": "AlreadyExists"}
            self.rv += 1
            self.lease = {**copy.deepcopy(obj), "metadata": {**obj["metadata"],
                                                            "resourceVersion": str(self.rv)}}
            return 201, copy.deepcopy(self.lease)
        if self.lease is None:
            return 404, None
        if obj["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            return 409, {"reason": "Conflict"}
        self.rv += 1
        self.lease = {**copy.deepcopy(obj), "metadata": {**obj["metadata"],
                                                        "resourceVersion": str(self.rv)}}
        return 200, copy.deepcopy(self.lease)

    @property
    def holder(self) -> str:
        return (self.lease or {}).get("spec", {}).get("holderIdentity", "")


class FakeApi:
    def __init__(self, server: FakeApiserver, who: str):
        self.server, self.who = server, who

    def get(self, until):
        return self.server.handle(self.who, "GET", None)

    def create(self, obj, until):
        return self.server.handle(self.who, "POST", obj)

    def replace(self, obj, until):
        return self.server.handle(self.who, "PUT", obj)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def server():
    return FakeApiserver()


def election(server, clock, me, settings=SETTINGS, api=None):
    return Election(api or server.client(me), me, settings, NAME, clock=clock, wall=clock.wall)


# ------------------------------------------------------------------------------ acquire, renew


def test_the_first_watcher_creates_the_lease_and_leads(server, clock):
    """Absent Lease: POST naming us; we lead; the spec has the fields client-go writes."""
    a = election(server, clock, "a")
    attempt = a.try_acquire_or_renew()
    assert attempt.ok and attempt.why == "created the Lease"
    assert a.leading()
    spec = server.lease["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"] == micro_time(clock.wall())
    assert spec["renewTime"].endswith("Z") and len(spec["renewTime"].split(".")[1]) == 7


def test_the_leader_renews_with_the_resource_version_it_read(server, clock):
    """A renew is a PUT of what was read (its resourceVersion) with a new renewTime; the
    acquireTime and the transitions stay."""
    a = election(server, clock, "a")
    a.try_acquire_or_renew()
    first = copy.deepcopy(server.lease)
    clock.advance(2)
    attempt = a.try_acquire_or_renew()
    assert attempt.ok and attempt.why == "renewed"
    spec = server.lease["spec"]
    assert spec["acquireTime"] == first["spec"]["acquireTime"]
    assert spec["renewTime"] != first["spec"]["renewTime"]
    assert spec["leaseTransitions"] == 0
    assert int(server.lease["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert [m for w, m, _ in server.log] == ["GET", "POST", "GET", "PUT"]


def test_a_second_watcher_follows_a_held_lease(server, clock):
    a, b = election(server, clock, "a"), election(server, clock, "b")
    a.try_acquire_or_renew()
    attempt = b.try_acquire_or_renew()
    assert not attempt.ok and attempt.lost and attempt.holder == "a"
    assert not b.leading() and server.holder == "a"


def test_a_race_to_create_gives_one_leader_and_a_409(server, clock):
    """Both read "absent"; the second POST gets 409 AlreadyExists: that watcher follows."""
    a, b = election(server, clock, "a"), election(server, clock, "b")

    class Racing(FakeApi):
        def get(self, until):  # b read before a's create landed
            return Reply(404, None, "GET answered 404")

    b.api = Racing(server, "b")
    assert a.try_acquire_or_renew().ok
    attempt = b.try_acquire_or_renew()
    assert not attempt.ok and attempt.conflict and not b.leading()
    assert server.holder == "a"


def test_a_stale_resource_version_gets_409_and_the_writer_follows(server, clock):
    """b read the Lease, a renewed it, b's takeover PUT carries the old resourceVersion: 409,
    and a stays the leader."""
    a, b = election(server, clock, "a"), election(server, clock, "b")
    a.try_acquire_or_renew()
    stale = copy.deepcopy(server.lease)

    class ReadEarlier(FakeApi):
        def get(self, until):
            return Reply(200, copy.deepcopy(stale), "GET answered 200")

    b.api = ReadEarlier(server, "b")
    b.observed, b.observed_at = Record.of(stale["spec"]), clock() - 60  # as if long unchanged
    clock.advance(2)
    assert a.try_acquire_or_renew().ok
    attempt = b.try_acquire_or_renew()
    assert not attempt.ok and attempt.conflict and "409" in attempt.why
    assert server.holder == "a" and ("b", "PUT", 409) in server.log


# ------------------------------------------------------------------------------ takeover


def test_takeover_only_after_lease_duration_without_change_by_the_local_clock(server, clock):
    """The follower counts from when it first saw the record unchanged, on its own clock; the
    remote renewTime (far in the past by the wall clock here) is never compared with it."""
    a, b = election(server, clock, "a"), election(server, clock, "b")
    a.try_acquire_or_renew()
    clock.wall = lambda: clock.epoch + timedelta(days=3650)  # b's wall clock is 10 years ahead
    server.down.add("a")                                      # a stops renewing
    assert not b.try_acquire_or_renew().ok                    # first sight: counting starts
    clock.advance(14.9)
    assert not b.try_acquire_or_renew().ok
    clock.advance(0.2)
    attempt = b.try_acquire_or_renew()
    assert attempt.ok and attempt.why == "took over from a"
    spec = server.lease["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"]


def test_a_renewed_record_restarts_the_follower_count(server, clock):
    a, b = election(server, clock, "a"), election(server, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    for _ in range(10):                       # 20 s: the leader renews every 2 s
        clock.advance(2)
        assert a.try_acquire_or_renew().ok
        assert not b.try_acquire_or_renew().ok
    assert server.holder == "a"


def test_a_released_lease_is_taken_at_once(server, clock):
    """A leader stopping cleanly empties the holder: a follower takes it at its next attempt."""
    a, b = election(server, clock, "a"), election(server, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    assert a.release() and not a.leading()
    assert server.lease["spec"]["holderIdentity"] == ""
    attempt = b.try_acquire_or_renew()
    assert attempt.ok and attempt.why == "took the released Lease"
    assert server.lease["spec"]["leaseTransitions"] == 1


# ------------------------------------------------------------------------------ stepping down


def test_the_leader_steps_down_when_renews_fail_past_the_renew_deadline(server, clock):
    """Renews fail (partition): `lease-renew-failed` each time while time is left; at the
    deadline on_stopped runs once and leading() is already False, before any follower can take
    over (lease_duration > renew_deadline)."""
    events = []
    a = election(server, clock, "a")
    elector = Elector(a, on_started=lambda at: events.append("started"),
                      on_stopped=lambda why: events.append(("stopped", why)),
                      on_renew_failed=lambda at, left: events.append(("renew-failed", left)))
    elector.step()
    renewed = clock()
    server.down.add("a")
    waits = []
    while elector.is_leader:
        clock.advance(waits[-1] if waits else 2)
        waits.append(elector.step())
    assert events[0] == "started"
    assert [e[0] for e in events[1:]] == ["renew-failed"] * (len(events) - 2) + ["stopped"]
    assert clock() - renewed == pytest.approx(10)
    assert "no renew for 10s" in events[-1][1]
    assert not elector.leading() and not a.leading(renewed + 10)
    assert a.leading(renewed + 9.99)


def test_leading_ends_at_the_deadline_even_while_an_attempt_hangs(server, clock):
    """leading() is a function of the local clock: an attempt stuck in a request does not
    extend it, and expire() runs on_stopped at once."""
    stopped = []
    a = election(server, clock, "a")
    elector = Elector(a, on_stopped=stopped.append)
    elector.step()
    clock.advance(10)
    assert not elector.leading()
    elector.expire()
    assert len(stopped) == 1 and not elector.is_leader


def test_a_leader_that_sees_another_holder_stops_at_once(server, clock):
    stopped = []
    a, b = election(server, clock, "a"), election(server, clock, "b")
    elector = Elector(a, on_stopped=stopped.append)
    elector.step()
    server.down.add("a")
    b.try_acquire_or_renew()
    clock.advance(15.1)
    assert b.try_acquire_or_renew().ok
    server.down.discard("a")
    a.renewed_at = clock()  # as if a's renew deadline were still far: the record alone ends it
    elector.step()
    assert stopped and "held by b" in stopped[0] and not elector.leading()


def test_the_follower_is_told_once_per_holder(server, clock):
    seen = []
    a, b = election(server, clock, "a"), election(server, clock, "b")
    a.try_acquire_or_renew()
    elector = Elector(b, on_follow=lambda at: seen.append(at.holder))
    for _ in range(3):
        elector.step()
        clock.advance(2)
    assert seen == ["a"]


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("settings", [
    LeaseSettings(15, 10, 2),
    LeaseSettings(8, 5, 2),
    LeaseSettings(1.5, 1.3, 1),
    LeaseSettings(60, 30, 10),
])
def test_safe_timings_are_accepted(settings):
    assert settings.problems() == []
    assert settings.check() is settings


@pytest.mark.parametrize("settings,flag,value", [
    (LeaseSettings(10, 10, 2), "--lease-duration", "10s"),
    (LeaseSettings(8, 10, 2), "--lease-duration", "8s"),
    (LeaseSettings(15, 2.4, 2), "--renew-deadline", "2.4s"),
    (LeaseSettings(15, 10, 9), "--renew-deadline", "10s"),
    (LeaseSettings(15, 10, 0), "--retry-period", "0s"),
    (LeaseSettings(-1, 10, 2), "--lease-duration", "-1s"),
    (LeaseSettings(0.9, 0.5, 0.1), "--lease-duration", "0.9s"),
])
def test_unsafe_timings_are_refused_naming_the_flag_and_value(settings, flag, value):
    problems = settings.problems()
    assert problems and any(p.startswith(f"{flag} {value}:") for p in problems), problems
    with pytest.raises(LeaseSettingsError) as e:
        settings.check()
    assert isinstance(e.value, ValueError)


def test_the_lease_duration_is_written_in_whole_seconds_rounded_up():
    assert LeaseSettings(15, 10, 2).duration_seconds == 15
    assert LeaseSettings(15.2, 10, 2).duration_seconds == 16


@pytest.mark.parametrize("stack,name", [
    ("prod", "sealer-registry-watch-prod"),
    ("e2e-watch", "sealer-registry-watch-e2e-watch"),
])
def test_lease_name_keeps_a_valid_stack_name(stack, name):
    assert lease_name(stack) == name


def test_lease_name_of_an_org_stack_is_valid_and_distinct():
    one, two = lease_name("acme/registry/Prod_1"), lease_name("acme/registry/prod-1")
    assert one != two
    for name in (one, two):
        assert name.startswith("sealer-registry-watch-acme-registry-")
        assert all(c.isalnum() and c.islower() or c.isdigit() or c in "-." for c in name), name


def test_a_follower_that_cannot_reach_the_lease_is_told_once_per_reason(server, clock):
    """No apiserver answers (or the credentials are refused): logged once, not every retry;
    again when the reason changes."""
    errors = []
    b = election(server, clock, "b")
    elector = Elector(b, on_error=lambda at: errors.append(at.why))
    server.down.add("b")
    for _ in range(3):
        elector.step()
    assert len(errors) == 1 and "timed out" in errors[0]
    server.down.discard("b")
    assert elector.step() == SETTINGS.retry_period and elector.is_leader
