"""cli/probe.py probe_hosts(again=True): a host that answered nothing within the probe's
deadline (our own, cli/ssh.py DEADLINE_ERROR: it connected but was slow) is probed once more and
its second answer counts; a host whose connect failed (dead: ssh's ConnectTimeout) or that
answered is probed once. Without ``again`` (status) nobody is probed twice."""

from __future__ import annotations

import subprocess
import threading

from cli.probe import probe_hosts
from cli.ssh import DEADLINE_ERROR
from components.remote_scripts import ScriptRun

ANSWER = "probe=1\nhostname=h\nregistry=stopped\nrefs_ok=0\n"


class Access:
    """SshAccess's run(): each host answers from its list of outcomes, one per call."""

    def __init__(self, outcomes: dict[str, list[str]]):
        self.outcomes, self.calls, self.lock = outcomes, {}, threading.Lock()

    def run(self, ip, script, timeout=15.0, **_kw):
        with self.lock:
            n = self.calls.get(ip, 0)
            self.calls[ip] = n + 1
        what = self.outcomes[ip][min(n, len(self.outcomes[ip]) - 1)]
        if what == "answer":
            return subprocess.CompletedProcess([], 0, ANSWER, "")
        if what == "slow":
            return subprocess.CompletedProcess([], 255, "", f"{DEADLINE_ERROR} {timeout:.0f}s")
        return subprocess.CompletedProcess(
            [], 255, "", "ssh: connect to host 198.18.0.9 port 22: Connection timed out\n")


COMMAND = ScriptRun("bash -s --", "")
OUTCOMES = {"198.18.0.21": ["slow", "answer"], "198.18.0.22": ["answer"],
            "198.18.0.23": ["dead"], "198.18.0.24": ["slow", "slow"]}


def test_a_slow_host_is_probed_again_and_its_second_answer_counts():
    access = Access(OUTCOMES)
    probes = probe_hosts(access, list(OUTCOMES), COMMAND, again=True)
    assert access.calls == {"198.18.0.21": 2, "198.18.0.22": 1, "198.18.0.23": 1, "198.18.0.24": 2}
    assert probes["198.18.0.21"].reachable and probes["198.18.0.21"].attempts == 2
    assert probes["198.18.0.22"].reachable and probes["198.18.0.22"].attempts == 1
    dead, slow = probes["198.18.0.23"], probes["198.18.0.24"]
    assert not dead.reachable and not dead.slow and dead.attempts == 1
    assert not slow.reachable and slow.slow and slow.attempts == 2
    assert "timed out after" in slow.error


def test_without_again_nobody_is_probed_twice():
    access = Access(OUTCOMES)
    probes = probe_hosts(access, list(OUTCOMES), COMMAND)
    assert set(access.calls.values()) == {1}
    assert not probes["198.18.0.21"].reachable and probes["198.18.0.21"].slow


def test_the_report_names_the_hosts_probed_again():
    """The check's report says which hosts answered only when asked again."""
    import io

    from cli.health import assess, report
    from tests.unit.test_cli_status import IMAGES, healthy_probes, make_config

    config = make_config()
    result = assess(config, IMAGES, healthy_probes())
    out = io.StringIO()
    report(config, result, 0.5, out)
    assert "probed again" not in out.getvalue()
    result.asked_again = ["198.18.0.21"]
    out = io.StringIO()
    report(config, result, 0.5, out)
    assert ("note: 1 hosts answered nothing within the probe's deadline and were probed again "
            "(198.18.0.21)") in out.getvalue()
