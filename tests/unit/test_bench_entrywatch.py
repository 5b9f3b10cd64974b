"""bench/entrywatch.py's figures from recorded pulls, and the report's goals for them (phase
`entrywatch`: pulls through the node-local entry point while `cli watch` recovers master0)."""

from __future__ import annotations

import re

import pytest

from bench.entrywatch import EntryWatchError, Pulled, figures
from bench.report import table, verdicts

DOWN_AT = 1000.0


def pulled(began: float, seconds: float, ok: bool = True, retry: bool = False, error: str = "") -> Pulled:
    return Pulled(DOWN_AT + began, seconds, ok, error, retry)


def test_the_first_pull_is_the_first_started_after_the_outage():
    """A pull that began before master0 went down is not "after"; the first one after is."""
    out = figures("docker", "killed", [pulled(-0.5, 0.4), pulled(0.01, 1.6), pulled(1.7, 0.5)], DOWN_AT)
    assert out["outage_pull_docker_killed_watch_first_s"] == 1.6
    assert out["outage_pull_docker_killed_watch_later_max_s"] == 0.5
    assert out["outage_pull_docker_killed_watch_pulls"] == 2


def test_a_failed_pull_and_its_retry_both_count_with_when_and_why():
    """Failures count every failed attempt after the outage; each is listed with its start
    (seconds after the outage), its duration and the client's error."""
    pulls = [pulled(0.0, 1.5), pulled(14.2, 0.3, ok=False, error="EOF"),
             pulled(14.5, 3.9, retry=True), pulled(18.4, 0.6)]
    out = figures("docker", "off", pulls, DOWN_AT)
    assert out["outage_pull_docker_off_watch_failures"] == 1
    assert out["outage_pull_docker_off_watch_later_max_s"] == 3.9
    assert out["outage_pull_docker_off_watch_later_max_at_s"] == 14.5
    assert out["outage_pull_docker_off_watch_failed"] == [
        {"at_s": 14.2, "seconds": 0.3, "retry": False, "error": "EOF"}]


def test_a_single_pull_after_the_outage_has_no_later_pull():
    out = figures("containerd16", "killed", [pulled(0.1, 1.4)], DOWN_AT)
    assert out["outage_pull_containerd16_killed_watch_later_max_s"] == 0.0
    assert out["outage_pull_containerd16_killed_watch_later_max_at_s"] is None


def test_no_pull_after_the_outage_is_an_error():
    with pytest.raises(EntryWatchError, match="no pull started after master0 went off"):
        figures("docker", "off", [pulled(-1.0, 0.5)], DOWN_AT)


def test_the_report_judges_the_watch_figures_against_issue_21_goals():
    """0 failures, the first pull <= 5 s, later ones within 1 s of the healthy figure of the same
    lab, kill -> verified <= 30 s; a figure not measured gets no verdict."""
    results = {"outage_pull_docker_killed_watch_alive_max_s": 0.6,
               "outage_pull_docker_killed_watch_failures": 1,
               "outage_pull_docker_killed_watch_first_s": 1.5,
               "outage_pull_docker_killed_watch_later_max_s": 3.9,
               "outage_pull_containerd16_killed_watch_failures": 0,
               "outage_watch_killed_verified_s": 21.0}
    got = verdicts(results)
    assert got["outage_pull_docker_killed_watch_failures"] is False
    assert got["outage_pull_docker_killed_watch_first_s"] is True
    assert got["outage_pull_docker_killed_watch_later_max_s"] is False
    assert got["outage_pull_containerd16_killed_watch_failures"] is True
    assert got["outage_watch_killed_verified_s"] is True
    assert "outage_watch_off_verified_s" not in got
    assert re.search(r"entrywatch: master0 killed -> verified \(cli watch\)\s+21\.00\s+<= 30 s\s+yes",
                     table(results))
