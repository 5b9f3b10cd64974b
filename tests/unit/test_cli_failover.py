"""cli/failover.py: the watcher's decisions from timed probe rounds (quorum, window, partition of
one prober, flapping, hold-down, a returning master0), the settings' rules, the replica stamp and
the choice of the new master0; accept and reject cases each."""

from __future__ import annotations

import json

import pytest

from cli.failover import (Kind, Probe, Replica, Round, Settings, Stamp, Vote, Watch,
                          parse_duration, parse_stamp, pick_probers, quorum, rank_candidates,
                          read_report,
                          vote_of)

M0, M1, M2, N1, N2 = "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.21", "10.0.0.22"
PROBERS = (M1, M2, N1)
A, D, X = Vote.ALIVE, Vote.DEAD, Vote.NOVOTE
SETTINGS = Settings(window=6, interval=1, hold_down=30)


def rnd(at: float, *votes: Vote, target: str = M0, answers: bool | None = None) -> Round:
    """A round at ``at`` where PROBERS voted ``votes`` in order."""
    return Round(at, target, tuple(
        Probe(p, v, answers=(v is A) if answers is None else answers and v is not X)
        for p, v in zip(PROBERS, votes)))


def feed(watch: Watch, rounds) -> list:
    return [d for r in rounds for d in watch.observe(r)]


def kinds(decisions) -> list[str]:
    return [str(d.kind) for d in decisions]


def dead_for(seconds: float, start: float = 0.0, votes=(D, D, D)) -> list[Round]:
    return [rnd(start + t, *votes) for t in range(int(seconds) + 1)]


# ------------------------------------------------------------------------------ votes


@pytest.mark.parametrize("code,rc,vote,answered", [
    ("401", 0, A, True), ("200", 0, A, True),          # accept: registry up (auth on or off)
    ("000", 28, D, False),                              # timed out: packets dropped
    ("000", 7, D, True),                                # refused: host up, registry down
    ("503", 0, D, True), ("404", 0, D, True),           # something else answers the port
    ("000", 6, D, False),                               # could not resolve / no route
])
def test_vote_of_a_curl_result(code, rc, vote, answered):
    assert vote_of(code, rc) == (vote, answered)


@pytest.mark.parametrize("n,q", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_quorum_is_a_strict_majority(n, q):
    assert quorum(n) == q


# ------------------------------------------------------------------------------ master0 dead


def test_a_dead_majority_sustained_over_the_window_fails_over_once():
    """Accept: 3 of 3 probers see master0 dead for the whole window: one failover decision."""
    watch = Watch(SETTINGS, M0)
    decisions = feed(watch, dead_for(6))
    assert kinds(decisions) == ["suspect", "failover"]
    assert decisions[-1].at == 6 and decisions[-1].target == M0
    assert set(decisions[-1].evidence) == set(PROBERS)


def test_a_majority_is_enough_two_of_three():
    watch = Watch(SETTINGS, M0)
    assert kinds(feed(watch, dead_for(6, votes=(D, D, A)))) == ["suspect", "failover"]


def test_one_failed_probe_never_acts():
    """Reject: a single dead round, however the window is set, decides nothing."""
    for settings in (SETTINGS, Settings(window=0, interval=1, hold_down=30)):
        watch = Watch(settings, M0)
        assert kinds(feed(watch, [rnd(0, D, D, D), rnd(1, A, A, A)])) == ["suspect", "cleared"]


def test_dead_shorter_than_the_window_does_not_act():
    """Reject: 5 s of dead rounds with a 6 s window, then master0 answers: no failover."""
    watch = Watch(SETTINGS, M0)
    decisions = feed(watch, [*dead_for(4), rnd(5, A, D, D)])
    assert kinds(decisions) == ["suspect"]  # 2 of 3 still dead at t=5: the count goes on
    decisions = feed(watch, [rnd(6, A, A, D), rnd(7, A, A, A)])
    assert kinds(decisions) == ["cleared"]


def test_a_minority_of_dead_votes_never_acts():
    """Reject: one prober cut off from master0 (but reachable) votes dead forever: 1 of 3."""
    watch = Watch(SETTINGS, M0)
    assert feed(watch, dead_for(60, votes=(D, A, A))) == []


def test_a_partition_of_one_prober_is_no_vote_not_dead():
    """Reject: a prober we cannot reach is no vote; the other two see master0 alive."""
    watch = Watch(SETTINGS, M0)
    assert feed(watch, dead_for(60, votes=(X, A, A))) == []


def test_too_few_votes_decide_nothing():
    """Reject: two probers unreachable and one dead vote: undecidable, logged once, no action."""
    watch = Watch(SETTINGS, M0)
    decisions = feed(watch, dead_for(30, votes=(X, X, D)))
    assert kinds(decisions) == ["undecidable"]


def test_fewer_probers_than_the_minimum_decide_nothing():
    watch = Watch(SETTINGS, M0)
    rounds = [Round(t, M0, (Probe(M1, D),)) for t in range(30)]
    assert kinds(feed(watch, rounds)) == ["undecidable"]


def test_a_flapping_master0_never_fails_over():
    """Reject: dead 4 s, alive 1 s, over and over: each streak is shorter than the window."""
    watch = Watch(SETTINGS, M0)
    rounds = []
    for cycle in range(10):
        base = cycle * 6
        rounds += [rnd(base + t, D, D, D) for t in range(5)] + [rnd(base + 5, A, A, A)]
    decisions = feed(watch, rounds)
    assert "failover" not in kinds(decisions)
    assert kinds(decisions).count("suspect") == 10


def test_a_gap_in_the_rounds_restarts_the_evidence():
    """Reject: two dead rounds 7 s apart (the probers were stuck) are not 7 s of evidence."""
    watch = Watch(SETTINGS, M0)
    decisions = feed(watch, [rnd(0, D, D, D), rnd(7, D, D, D), rnd(8, D, D, D)])
    assert "failover" not in kinds(decisions)
    assert kinds(decisions) == ["suspect", "suspect"]


def test_undecidable_rounds_restart_the_count():
    watch = Watch(SETTINGS, M0)
    decisions = feed(watch, [*dead_for(4), rnd(5, X, X, D), *dead_for(4, start=6)])
    assert "failover" not in kinds(decisions)


# ------------------------------------------------------------------------------ after a failover


def test_hold_down_blocks_a_second_failover_then_allows_it():
    """After a failover the new master0 is watched; dead at once, the watcher holds (logged
    once) until the hold-down ends, then acts."""
    watch = Watch(SETTINGS, M0)
    feed(watch, dead_for(6))
    watch.failed_over(M1, at=6, verified=True)
    assert watch.master0 == M1 and M0 in watch.fenced
    held = feed(watch, [rnd(7 + t, D, D, D, target=M1) for t in range(25)])
    assert kinds(held) == ["suspect", "held"]
    after = feed(watch, [rnd(36, D, D, D, target=M1)])
    assert kinds(after) == ["failover"]


def test_rounds_about_the_old_master0_no_longer_count_as_master0():
    watch = Watch(SETTINGS, M0)
    feed(watch, dead_for(6))
    watch.failed_over(M1, at=6, verified=True)
    assert feed(watch, dead_for(60, start=40)) == []  # target M0: a fenced host, silent


def test_an_unverified_recovery_is_resumed_not_fenced():
    """A recovery whose `up` failed leaves master0 on the new host: when it does not serve, the
    watcher reruns that recovery; it never fences a second host for it."""
    watch = Watch(SETTINGS, M0)
    feed(watch, dead_for(6))
    watch.failed_over(M1, at=6, verified=False)
    decisions = feed(watch, [rnd(40 + t, D, D, D, target=M1) for t in range(7)])
    assert kinds(decisions) == ["suspect", "resume"]
    watch.failed_over(M1, at=46, verified=True)
    assert watch.master0 == M1 and M1 not in watch.fenced and not watch.unverified


def test_a_serving_master0_ends_the_resume_mode():
    """An unverified recovery whose master0 then serves (a quorum sees it alive) is done: when
    that master0 dies later, it is a failover again, not a rerun against a dead host."""
    watch = Watch(SETTINGS, M0)
    watch.unverified = True  # e.g. the stack's last update failed before the watcher started
    feed(watch, [rnd(0, A, A, D)])
    assert not watch.unverified
    assert kinds(feed(watch, dead_for(6, start=1))) == ["suspect", "failover"]


def test_no_candidate_waits_a_hold_down():
    watch = Watch(SETTINGS, M0)
    feed(watch, dead_for(6))
    watch.held_off(at=6)
    assert kinds(feed(watch, dead_for(20, start=7))) == ["suspect", "held"]
    assert watch.master0 == M0


# ------------------------------------------------------------------------------ returning host


def returning_watch(rejoin: bool = False) -> Watch:
    watch = Watch(SETTINGS, M0, rejoin_returning=rejoin)
    feed(watch, dead_for(6))
    watch.failed_over(M1, at=6, verified=True)
    return watch


def test_a_returning_master0_is_reported_once_when_it_answers_over_the_window():
    watch = returning_watch()
    rounds = [rnd(100 + t, A, A, A, target=M0) for t in range(10)]
    decisions = feed(watch, rounds)
    assert kinds(decisions) == ["returned"]
    assert "stale data" in decisions[0].why and "3 of them" in decisions[0].why


def test_a_returning_master0_is_rejoined_only_with_rejoin_returning():
    assert kinds(feed(returning_watch(True), [rnd(100 + t, A, A, A, target=M0)
                                              for t in range(7)])) == ["returned", "rejoin"]


def test_a_host_that_answers_with_its_registry_down_has_returned_too():
    """Connection refused on the registry port: the host is up (and on down_hosts)."""
    watch = returning_watch()
    rounds = [rnd(100 + t, D, D, D, target=M0, answers=True) for t in range(7)]
    assert kinds(feed(watch, rounds)) == ["returned"]


def test_a_blip_of_the_fenced_host_is_not_a_return():
    """Reject: it answers 3 s, then is silent again: shorter than the window, nothing."""
    watch = returning_watch(True)
    rounds = [rnd(100 + t, A, A, A, target=M0) for t in range(3)]
    rounds += [rnd(103 + t, D, D, D, target=M0) for t in range(3)]
    assert feed(watch, rounds) == []


def test_one_prober_seeing_the_fenced_host_is_not_a_return():
    watch = returning_watch(True)
    assert feed(watch, [rnd(100 + t, A, D, X, target=M0) for t in range(20)]) == []


def test_a_returned_host_going_silent_is_logged_and_can_return_again():
    watch = returning_watch()
    back = [rnd(100 + t, A, A, A, target=M0) for t in range(7)]
    gone = [rnd(110, D, D, D, target=M0)]
    again = [rnd(120 + t, A, A, A, target=M0) for t in range(7)]
    assert kinds(feed(watch, [*back, *gone, *again])) == ["returned", "gone", "returned"]


def test_a_rejoined_host_is_no_longer_watched_as_fenced():
    watch = returning_watch(True)
    watch.rejoined(M0)
    assert feed(watch, [rnd(100 + t, A, A, A, target=M0) for t in range(7)]) == []


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("text,seconds", [("6s", 6), ("500ms", 0.5), ("2m", 120), ("1h", 3600),
                                          ("1.5", 1.5), (" 3 s ", 3)])
def test_parse_duration_accepts(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "6 seconds", "-1s", "1d", "1e3", "six"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_default_settings_are_fine():
    assert Settings().problems() == []
    assert SETTINGS.problems() == []


@pytest.mark.parametrize("settings,fragment", [
    (Settings(window=1, interval=1), "must hold at least two rounds"),
    (Settings(interval=0), "--interval 0s: must be more than 0"),
    (Settings(window=6, hold_down=5), "must be at least the window"),
    (Settings(min_probers=1), "must be at least 2"),
    (Settings(min_rounds=1), "min_rounds 1"),
])
def test_settings_that_could_act_on_thin_evidence_are_refused(settings, fragment):
    problems = settings.problems()
    assert len(problems) == 1 and fragment in problems[0], problems


# ------------------------------------------------------------------------------ probers


def test_probers_are_live_hosts_other_than_master0_masters_first():
    assert pick_probers([M0, M1, M2], [N1, N2], M0, []) == [M1, M2, N1]
    assert pick_probers([M0, M1, M2], [N1, N2], M1, [M0]) == [M2, N1, N2]
    assert pick_probers([M0], [N1], M0, [], count=3) == [N1]


# ------------------------------------------------------------------------------ stamps


GOOD_STAMP = {"source": M0, "completed_at": 1700000000, "files": 12, "bytes": 4096,
              "tree": "a" * 64}


def test_parse_stamp_accepts_the_contract():
    assert parse_stamp(json.dumps(GOOD_STAMP)) == Stamp(M0, 1700000000, 12, 4096, "a" * 64)
    assert parse_stamp(json.dumps({**GOOD_STAMP, "source": "self", "extra": 1})).source == "self"


@pytest.mark.parametrize("text,fragment", [
    ("", "not JSON"),
    ('{"source": "10.0.0.11", "completed_at": 17', "not JSON"),        # truncated mid-write
    ("[]", "not a JSON object"),
    (json.dumps({**GOOD_STAMP, "completed_at": "1700000000"}), "completed_at is '1700000000'"),
    (json.dumps({**GOOD_STAMP, "files": -1}), "files is -1"),
    (json.dumps({**GOOD_STAMP, "bytes": True}), "bytes is True"),
    (json.dumps({k: v for k, v in GOOD_STAMP.items() if k != "tree"}), "tree is None"),
    (json.dumps({**GOOD_STAMP, "tree": "A" * 64}), "not a sha256"),
    (json.dumps({**GOOD_STAMP, "source": ""}), "source is ''"),
])
def test_parse_stamp_rejects(text, fragment):
    with pytest.raises(ValueError, match=None) as e:
        parse_stamp(text)
    assert fragment in str(e.value)


# ------------------------------------------------------------------------------ candidates


def rank(replicas, *, down=(), rejoined_at=None, require=True, deploy=(M0, M1, M2)):
    return rank_candidates(masters=[M0, M1, M2], deploy_hosts=list(deploy), down=down,
                           old_master0=M0, replicas=replicas, rejoined_at=rejoined_at or {},
                           require_replica=require)


STAMP = parse_stamp(json.dumps(GOOD_STAMP))


def test_a_stamped_replica_comes_before_one_known_only_by_its_refs():
    ranked, rejected = rank({M1: Replica(refs_complete=True), M2: Replica(stamp=STAMP)})
    assert ranked == [M2, M1]
    assert rejected == {M0: "the old master0 (fenced)"}


def test_masters_in_config_order_when_equally_good():
    ranked, _ = rank({M1: Replica(stamp=STAMP), M2: Replica(stamp=STAMP)})
    assert ranked == [M1, M2]


def test_no_replica_is_no_candidate_in_pre_mode_but_is_in_post_mode():
    replicas = {M1: Replica(stamp_problem="none", refs_complete=False), M2: Replica()}
    ranked, rejected = rank(replicas)
    assert ranked == [] and "no complete replica (stamp: none; refs: incomplete)" == rejected[M1]
    assert rank(replicas, require=False)[0] == [M1, M2]


def test_down_hosts_and_non_deploy_hosts_are_never_candidates():
    ranked, rejected = rank({M1: Replica(stamp=STAMP), M2: Replica(stamp=STAMP)},
                            down=[M2], deploy=(M0, M1))
    assert ranked == [M1]
    assert rejected[M2] == "on down_hosts"
    ranked, rejected = rank({M1: Replica(stamp=STAMP), M2: Replica(stamp=STAMP)}, deploy=(M0, M1))
    assert ranked == [M1] and rejected[M2] == "not a deploy host"


def test_a_rejoined_host_needs_a_stamp_newer_than_its_rejoin():
    old = Replica(stamp=STAMP)
    ranked, rejected = rank({M1: old}, rejoined_at={M1: STAMP.completed_at + 10})
    assert ranked == [] and "rejoined by the watcher" in rejected[M1]
    ranked, _ = rank({M1: old}, rejoined_at={M1: STAMP.completed_at - 10})
    assert ranked == [M1]


# ------------------------------------------------------------------------------ a prober's report


def test_read_report_of_a_prober_that_ran():
    out = (f"probe=1\nreplica={json.dumps(GOOD_STAMP)}\n"
           f"target={M0} code=000 rc=28\ntarget={M2} code=401 rc=0\n")
    probes, replica = read_report(M1, [M0, M2], True, out)
    assert probes[M0] == Probe(M1, D, "curl exit 28", False)
    assert probes[M2] == Probe(M1, A, "http 401", True)
    assert replica == Replica(stamp=STAMP)


@pytest.mark.parametrize("ok,out,error", [
    (False, "", "Connection timed out"),              # ssh could not reach the prober
    (True, "", ""),                                   # the probe printed nothing
    (True, "hostname=x\n", ""),                       # not our probe
    (True, "probe=1\nreplica=none\n", ""),            # no line for the target
    (True, f"probe=1\ntarget={M0} code=000 rc=\n", ""),  # truncated line
])
def test_read_report_without_a_result_is_no_vote(ok, out, error):
    probes, _ = read_report(M1, [M0], ok, out, error)
    assert probes[M0].vote is X
    if error:
        assert probes[M0].detail == error


@pytest.mark.parametrize("line,problem", [
    ("replica=none", "none"),
    ("replica={\"source\": ", "unreadable: not JSON"),
])
def test_read_report_of_a_missing_or_broken_stamp(line, problem):
    _, replica = read_report(M1, [], True, f"probe=1\n{line}\n")
    assert replica.stamp is None and replica.stamp_problem.startswith(problem)


# ------------------------------------------------------------------------------ stale standbys

from cli.failover import master0_tree_of, stale_standbys  # noqa: E402

TREE_A, TREE_B = "a" * 64, "b" * 64


def stamped(tree: str) -> Replica:
    return Replica(stamp=Stamp(source="10.0.0.11", completed_at=1, files=3, bytes=9, tree=tree))


def test_a_standby_copied_from_another_tree_than_master0_s_is_marked_stale():
    """master0's tree moved (a push, a `sealer run <app>`): the standby whose stamp names the old
    tree would answer moved tags with old digests; the one that matches is left serving."""
    out = stale_standbys(TREE_B, ["10.0.0.12", "10.0.0.13"],
                         {"10.0.0.12": stamped(TREE_A), "10.0.0.13": stamped(TREE_B)}, {})
    assert list(out) == ["10.0.0.12"] and "old digests" in out["10.0.0.12"]


def test_nothing_is_marked_without_master0_s_tree_or_a_standby_s_stamp():
    """master0's tree not read (it did not answer, or no tree): no decision; a standby with no
    stamp (a copy in progress already made its marker) or not reported: left to its data step."""
    replicas = {"10.0.0.12": stamped(TREE_A), "10.0.0.13": Replica(stamp_problem="none")}
    assert stale_standbys(None, ["10.0.0.12"], replicas, {}) == {}
    assert stale_standbys(TREE_B, ["10.0.0.13", "10.0.0.14"], replicas, {}) == {}


def test_a_standby_is_marked_once_per_master0_tree():
    """Marked for tree B, it is not marked again while master0 stays at B; master0 moving on to
    another tree marks it again (its marker may have been lifted by a copy of B meanwhile)."""
    replicas = {"10.0.0.12": stamped(TREE_A)}
    assert stale_standbys(TREE_B, ["10.0.0.12"], replicas, {"10.0.0.12": TREE_B}) == {}
    assert list(stale_standbys("c" * 64, ["10.0.0.12"], replicas, {"10.0.0.12": TREE_B})) == ["10.0.0.12"]


@pytest.mark.parametrize("stdout, tree", [
    (f"probe=1\nreplica=none\ntree={TREE_A}\n", TREE_A),
    ("probe=1\nreplica=none\ntree=\n", None),           # no registry tree on master0
    (f"replica=none\ntree={TREE_A}\n", None),           # not a probe's output
    ("probe=1\nreplica=none\ntree=xyz\n", None),
    ("probe=1\nreplica=none\n", None),
])
def test_master0_tree_is_read_from_the_probe_s_tree_line(stdout, tree):
    assert master0_tree_of(stdout) == tree


# ------------------------------------------------------------------------------ hold-down record


def test_hold_for_keeps_the_later_end_and_then_holds_a_dead_master0():
    """A hold-down handed over (the previous leader's) blocks a failover exactly as one's own
    does; a shorter one never shortens the one in force."""
    from cli.failover import HoldDown  # noqa: F401

    watch = Watch(SETTINGS, M1)
    watch.hold_for(20, at=0, why="recovery of master0 10.0.0.11 -> 10.0.0.12")
    watch.hold_for(5, at=0)
    assert watch.hold_left(0) == 20 and watch.hold_why.startswith("recovery")
    assert kinds(feed(watch, [rnd(t, D, D, D, target=M1) for t in range(19)])) == ["suspect",
                                                                                   "held"]
    assert kinds(feed(watch, [rnd(20, D, D, D, target=M1)])) == ["failover"]
    assert Watch(SETTINGS, M1).hold_left(0) == 0


def test_the_hold_down_record_round_trips_and_bad_text_is_none():
    from cli.failover import HoldDown

    rec = HoldDown(42.5, "2026-12-06T18:41:00.000000Z", "recovery of master0 a -> b")
    assert HoldDown.from_text(rec.to_text()) == rec
    assert set(json.loads(rec.to_text())) == {"left_s", "until", "why"}
    for bad in (None, "", "{", "[]", '{"until": "x"}', '{"left_s": "x"}', '{"left_s": -1}',
                '{"left_s": NaN}', '{"left_s": Infinity}'):
        assert HoldDown.from_text(bad) is None, bad


def test_what_is_left_never_undercounts_and_never_goes_negative():
    """Left at the last write, less how long the new leader saw the Lease unchanged (the write
    is at least that old)."""
    from cli.failover import HoldDown

    assert HoldDown(40).remaining(15.2) == pytest.approx(24.8)
    assert HoldDown(10).remaining(15.2) == 0
    assert HoldDown(10).remaining(-3) == 10
