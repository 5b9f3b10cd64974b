"""The whole of issue 13 at once, on a real lab with the real engine: warm standby deployed, `cli
watch` running, master0 killed (packets dropped) while a node pulls every boot-history image.
The pulls go on through the read-only replicas with 0 failures, the watcher recovers without a
person, and then the node's containerd no longer lists the dead host at all (pulls take their
normal time again). The revived old master0 stays fenced: its stale registry is stopped, and no
node resolves or mirrors to it.
A fresh lab of 3 masters + 2 nodes; the tests run in order on one stack.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from lab.pull import PullRound, pull_round
from lab.stack import DOMAIN, PASSWORD, PORT, SECRETS, ProgramStack, hosts_line, stack_values
from lab.watcher import Watcher
from tests.e2e.labstack import lab_env  # noqa: F401  (fixture)
from tests.e2e.test_warm_standby import OUTAGE_PULL_BOUND_S, mirrors_of, report, upload_code
from tests.e2e.test_watch import ARGS, stack_config

pytestmark = pytest.mark.e2e


class TestWatchWithWarmStandby:
    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, lab_env, toolchain_env):  # noqa: F811
        stack = ProgramStack("e2e-watch-warm", toolchain_env)
        values = stack_values(lab_env, master0=lab_env.masters[0], distribution="pre")
        values["registry"]["local_registry"]["standby"] = "warm"
        stack.configure(values, {**SECRETS, "registry.tls.ca_key": lab_env.ca[1]})
        stack.up()
        yield stack
        stack.remove()

    @pytest.fixture(scope="class")
    @classmethod
    def watcher(cls, stack, toolchain_env, tmp_path_factory):
        watcher = Watcher(stack.name, toolchain_env, tmp_path_factory.mktemp("watch-warm"), *ARGS)
        yield watcher
        watcher.stop()
        print(watcher.tail(200))

    def test_pulls_continue_while_the_watcher_recovers(self, lab_env, stack, watcher):  # noqa: F811
        """Kill master0 and at once pull every image on a node: no pull fails, none takes longer
        than the bound written in docs/how-it-works.md (3 x containerd 1.6's 30 s connect
        timeout), the watcher fails over to master1 and verifies; afterwards the node's hosts.toml
        lists the new master0 (through the domain) and the live standby only, and a second round
        of pulls takes the usual time."""
        old, new, standby = lab_env.masters
        node = lab_env.nodes[0]
        watcher.wait_for(lambda e: e["event"] == "probers", 30, "the probers")
        rounds: dict[str, PullRound] = {}

        def pull() -> None:
            rounds["outage"] = pull_round(lab_env.lab, node, lab_env.refs, "admin", PASSWORD,
                                          DOMAIN, PORT)

        killed = time.monotonic()
        lab_env.lab.kill(old)
        puller = threading.Thread(target=pull, daemon=True)
        puller.start()
        verified = watcher.wait_for(lambda e: e["event"] == "verified", 120, "the verification")
        recovered_s = time.monotonic() - killed
        puller.join(timeout=OUTAGE_PULL_BOUND_S * len(lab_env.refs) + 60)
        assert not puller.is_alive(), "the pulls during the outage did not end"
        outage = rounds["outage"]
        report(f"pulls from the kill on (watcher verified after {recovered_s:.1f}s)", outage)
        assert outage.failures == [], outage.lines()
        assert max(outage.seconds) <= OUTAGE_PULL_BOUND_S, outage.lines()
        assert verified["healthy"] is True, verified["problems"]
        config = stack_config(stack)
        assert (config["master0"], config["down_hosts"]) == (new, [old])

        assert mirrors_of(lab_env.lab, node) == [f"https://{DOMAIN}:{PORT}", f"https://{standby}:{PORT}"]
        assert hosts_line(lab_env.lab, node) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
        after = pull_round(lab_env.lab, node, lab_env.refs, "admin", PASSWORD, DOMAIN, PORT)
        report("pulls after the recovery", after)
        assert after.failures == [] and max(after.seconds) < 10, after.lines()
        assert after.hops() == 0, after.lines()
        # Roles after the move: the new master0 takes pushes, the standby still refuses them.
        repo = lab_env.refs[0].split(":")[0]
        assert upload_code(lab_env.lab, node, new, repo) == 202
        assert upload_code(lab_env.lab, node, standby, repo) == 405

    def test_revived_old_master0_stays_out_of_every_node(self, lab_env, stack, watcher):  # noqa: F811
        """The old master0 revived (its registry, stale and read-write, answers again): the
        watcher stops that registry (an upload to its IP is no longer accepted); it stays on
        down_hosts, no host maps the domain to it and no node's containerd lists it; the watcher
        stops cleanly."""
        old, new, _ = lab_env.masters
        lab_env.lab.revive(old)
        watcher.wait_for(lambda e: e.get("decision") == "returned", 60, "the old master0's return")
        fenced = watcher.wait_for(lambda e: e["event"] == "fenced_registry", 60,
                                  "the stop of its stale registry")
        assert fenced["ok"] is True, fenced
        repo = lab_env.refs[0].split(":")[0]
        assert upload_code(lab_env.lab, lab_env.nodes[0], old, repo) not in (200, 201, 202)
        assert stack_config(stack)["down_hosts"] == [old]
        for ip in lab_env.all_ips[1:]:
            assert hosts_line(lab_env.lab, ip) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
        for node in lab_env.nodes:
            assert not any(old in url for url in mirrors_of(lab_env.lab, node))
        assert watcher.stop(signal.SIGTERM) == 0
