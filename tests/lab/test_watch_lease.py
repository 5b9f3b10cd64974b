"""cli/lease.py against the REAL kube-apiservers of the lab's control plane (3 masters, each an
etcd member and an apiserver): the apiserver answers 409 to a stale resourceVersion; of two
electors exactly one leads; a leader cut off from its apiserver (master0 killed: packets dropped)
steps down at its renew deadline and the other takes over within lease expiry; a leader that can
reach the other masters keeps the Lease through master0's death. Needs the toolchain's etcd,
kube-apiserver and kube-controller-manager (`make toolchain`). Every wait is bounded."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from cli.apiserver import _Credentials
from cli.lease import (Election, Elector, HttpLeaseApi, LeaseSettings, Record, lease_object)
from lab import Lab, toolchain
from lab import controlplane as cplane

pytestmark = pytest.mark.toolchain  # the engine toolchain (make toolchain)

SERVICES = ("etcd", "kube-apiserver", "kube-controller-manager")
SETTINGS = LeaseSettings(lease_duration=15, renew_deadline=10, retry_period=2)


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    missing = toolchain.explain_missing(*SERVICES)
    if missing:
        pytest.fail(missing, pytrace=False)
    lab = Lab(tmp_path_factory.mktemp("lease-lab"))
    lab.down()  # a crashed earlier run holds the names
    lab.up(masters=3, nodes=1)
    try:
        plane = cplane.up(lab, bin_dir=toolchain.bin_dir())
        creds = _Credentials(plane.kubeconfig.read_text(), None, plane.kubeconfig.parent)
        yield lab, plane, creds
    finally:
        lab.down()


class Recording(Election):
    """An Election that keeps when (its clock) it first saw each record."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sightings: list[tuple[float, str]] = []

    def _observe(self, record: Record) -> None:
        if record != self.observed:
            super()._observe(record)
            self.sightings.append((self.observed_at, record.holder))


class Candidate:
    """One elector in a thread, with the instants (time.monotonic) of its callbacks."""

    def __init__(self, creds, name: str, me: str, endpoints: list[str]):
        self.api = HttpLeaseApi(creds, lambda: endpoints, name)
        self.me = me
        self.events: list[tuple[float, str, str]] = []
        self.elector = Elector(
            Recording(self.api, me, SETTINGS, name),
            on_started=lambda a: self.events.append((time.monotonic(), "started", a.why)),
            on_stopped=lambda why: self.events.append((time.monotonic(), "stopped", why)),
            on_renew_failed=lambda a, left: self.events.append((time.monotonic(),
                                                                "renew-failed", a.why)),
            on_follow=lambda a: self.events.append((time.monotonic(), "follow", a.holder)))
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> "Candidate":
        self.thread = self.elector.start(self.stop)
        return self

    def end(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(SETTINGS.renew_deadline + 5)

    def first(self, kind: str) -> float | None:
        return next((t for t, k, _ in self.events if k == kind), None)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def spec_of(plane, name: str, server: str) -> dict:
    code, body = cplane.request(plane, "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-system/"
                                              f"leases/{name}", server=server)
    assert code == 200, body
    return json.loads(body)["spec"]


def test_the_apiserver_answers_409_to_a_stale_resource_version(cp):
    """POST of an existing Lease: 409 AlreadyExists; PUT with the resourceVersion read before
    another write: 409 Conflict, and the Lease keeps the other write."""
    lab, plane, creds = cp
    name = f"lease-409-{uuid.uuid4().hex[:6]}"
    api = HttpLeaseApi(creds, lambda: [cplane.server_of(plane.masters[1])], name)
    until = lambda: time.monotonic() + 5  # noqa: E731
    made = api.create(lease_object(name, "kube-system", Record("a", 15, transitions=0)), until())
    assert made.status == 201, made
    again = api.create(lease_object(name, "kube-system", Record("b", 15)), until())
    assert again.status == 409 and again.obj["reason"] == "AlreadyExists", again
    read = api.get(until()).obj
    first = dict(read, spec={**read["spec"], "holderIdentity": "a2"})
    assert api.replace(first, until()).status == 200
    stale = dict(read, spec={**read["spec"], "holderIdentity": "b"})
    conflict = api.replace(stale, until())
    print(f"\nstale PUT: {conflict.status} {conflict.obj.get('reason')}: {conflict.obj.get('message')}")
    assert conflict.status == 409 and conflict.obj["reason"] == "Conflict", conflict
    assert api.get(until()).obj["spec"]["holderIdentity"] == "a2"


def test_a_leader_cut_off_from_its_apiserver_steps_down_and_the_other_takes_over(cp):
    """a reaches only master0's apiserver, b only master1's and master2's. a leads; b follows
    (exactly one leader for 6 s). master0 killed: a's renews time out, a stops leading at its
    renew deadline, before b takes over; b takes over within lease_duration + retry_period of
    the last change it saw, with leaseTransitions + 1."""
    lab, plane, creds = cp
    m0, m1, m2 = plane.masters
    name = f"lease-cut-{uuid.uuid4().hex[:6]}"
    a = Candidate(creds, name, "a", [cplane.server_of(m0)]).start()
    try:
        wait_for(lambda: a.elector.leading(), 20, "a to lead")
        b = Candidate(creds, name, "b", [cplane.server_of(m1), cplane.server_of(m2)]).start()
        try:
            wait_for(lambda: b.first("follow"), 20, "b to follow")
            for _ in range(30):  # 6 s
                assert a.elector.leading() and not b.elector.leading()
                time.sleep(0.2)
            before = spec_of(plane, name, cplane.server_of(m1))
            assert before["holderIdentity"] == "a"
            renewed_at = a.elector.election.renewed_at
            lab.kill(m0)
            cut = time.monotonic()
            try:
                wait_for(lambda: b.elector.leading(), SETTINGS.lease_duration + 3 * SETTINGS.retry_period + 5,
                         "b to take over")
                taken = b.first("started")
                stopped = a.first("stopped")
                seen_at = max(t for t, holder in b.elector.election.sightings if holder == "a")
                print(f"\na renewed last {cut - renewed_at:.2f}s before the kill; a stopped leading "
                      f"{stopped - cut:.2f}s after the kill ({stopped - renewed_at:.2f}s after its "
                      f"last renew); b took over {taken - cut:.2f}s after the kill, "
                      f"{taken - renewed_at:.2f}s after a's last renew, {taken - seen_at:.2f}s after b "
                      f"last saw the Lease change; "
                      f"renew-failed events of a: {sum(1 for e in a.events if e[1] == 'renew-failed')}")
                assert stopped is not None and stopped < taken, a.events
                assert stopped - renewed_at <= SETTINGS.renew_deadline + 0.5
                # b counts from its last sight of a change (by its own clock): lease_duration,
                # then its next attempt; that sight is at most a retry period after a's renew.
                assert taken - seen_at <= SETTINGS.lease_duration + SETTINGS.retry_period + 1
                assert taken - renewed_at <= SETTINGS.lease_duration + 2 * SETTINGS.retry_period + 1.5
                after = spec_of(plane, name, cplane.server_of(m1))
                assert after["holderIdentity"] == "b"
                assert after["leaseTransitions"] == before["leaseTransitions"] + 1
                assert not a.elector.leading()
            finally:
                lab.revive(m0)
        finally:
            b.end()
    finally:
        a.end()
    cplane.wait_ready(plane, m0)


def test_a_leader_that_reaches_the_other_masters_keeps_the_lease_through_master0s_death(cp):
    """With every master's apiserver as candidates (the records' order: master0 first), the
    leader's renews move to master1 when master0 dies: it never stops leading and the follower
    never takes over (two lease durations watched)."""
    lab, plane, creds = cp
    m0 = plane.masters[0]
    servers = [cplane.server_of(ip) for ip in plane.masters]
    name = f"lease-keep-{uuid.uuid4().hex[:6]}"
    a = Candidate(creds, name, "a", servers).start()
    try:
        wait_for(lambda: a.elector.leading(), 20, "a to lead")
        b = Candidate(creds, name, "b", servers).start()
        try:
            wait_for(lambda: b.first("follow"), 20, "b to follow")
            assert a.api.last_answered == servers[0]
            lab.kill(m0)
            try:
                end = time.monotonic() + 2 * SETTINGS.lease_duration
                while time.monotonic() < end:
                    assert a.elector.leading() and not b.elector.leading(), (a.events, b.events)
                    time.sleep(0.2)
                assert a.api.last_answered in servers[1:]
                assert a.first("stopped") is None and b.first("started") is None
                print(f"\na's failed renews during master0's death: "
                      f"{[e[2] for e in a.events if e[1] == 'renew-failed']}")
            finally:
                lab.revive(m0)
        finally:
            b.end()
    finally:
        a.end()
    cplane.wait_ready(plane, m0)
