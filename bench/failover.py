"""Phase `failover`: the unattended recovery by `python -m cli watch` (issue 13), timed from the
kill of master0 (packets dropped, processes frozen) to the watcher's decision that it is dead, to
its recovery `up` done, to the check of every host passed. Goal: kill -> verified <= 30 s.

A fresh lab of 3 masters + ``nodes`` nodes, a stack deployed in `pre` mode, the watcher started
as an operator's systemd unit would start it (its own session, the JSON-lines log read back), and
master0 killed once the watcher has its probers. The figures come from the watcher's own log
(epoch of each event) against the time of the kill.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Callable

from lab.stack import PORT
from lab.watcher import PacketKinds, Watcher

WINDOW_S, INTERVAL_S, HOLD_DOWN_S = 6, 1, 30
ARGS = ("--interval", f"{INTERVAL_S}s", "--window", f"{WINDOW_S}s", "--hold-down", f"{HOLD_DOWN_S}s")


class FailoverError(RuntimeError):
    pass


def measure(lab, stack_name: str, env: dict[str, str], workdir: Path, masters: list[str],
            log: Callable[[str], None]) -> dict:
    """Start the watcher on the deployed stack, kill master0, return the figures (seconds from
    the kill) and what the watcher did; the watcher is stopped before returning."""
    old = masters[0]
    watcher = Watcher(stack_name, env, workdir, *ARGS)
    try:
        watcher.wait_for(lambda e: e["event"] == "probers", 60, "the watcher's probers")
        time.sleep(2 * INTERVAL_S)  # a few alive rounds first, as in operation
        if watcher.decisions():
            raise FailoverError(f"the watcher decided before the kill: {watcher.decisions()}")
        retx = PacketKinds(lab, old, PORT)
        packets: dict[str, tuple[int, int]] = {}

        def count(key):
            return lambda _e: packets.setdefault(key, (lab.packets_to(old), retx.breakdown()))

        killed = time.time()
        lab.kill(old)
        try:
            decided = watcher.wait_for(lambda e: e.get("decision") == "failover", 60,
                                       "a failover", then=count("decision"))
            verified = watcher.wait_for(lambda e: e["event"] == "verified", 120,
                                        "the verification", then=count("verified"))
        finally:
            retx.remove()
        events = watcher.events()
        up = next(e for e in events if e["event"] == "up")
        fence = next(e for e in events if e["event"] == "fence")
    finally:
        code = watcher.stop(signal.SIGTERM)
    if not (up["ok"] and verified["healthy"]):
        raise FailoverError(f"the watcher's recovery did not verify: {verified}\n{watcher.tail()}")
    figures = {
        "failover_detect_s": round(decided["epoch"] - killed, 2),
        "failover_up_done_s": round(up["epoch"] - killed, 2),
        "failover_verified_s": round(verified["epoch"] - killed, 2),
        "failover_up_s": up["seconds"],
        # Retransmissions of probe connections opened before the kill are not the recovery's.
        "failover_packets_to_old": (packets["verified"][0] - packets["decision"][0]
                                    - (packets["verified"][1]["retransmits"]
                                       - packets["decision"][1]["retransmits"])),
        "failover_packets_to_old_by_kind": {k: packets["verified"][1][k] - packets["decision"][1][k]
                                            for k in packets["decision"][1]},
        "failover_new_master0": fence["new"],
        "failover_watch_exit": code,
    }
    log(f"watch failover: kill -> dead decided {figures['failover_detect_s']:.1f}s, -> up done "
        f"{figures['failover_up_done_s']:.1f}s, -> verified {figures['failover_verified_s']:.1f}s "
        f"(window {WINDOW_S}s, interval {INTERVAL_S}s; up {up['seconds']:.1f}s; "
        f"{figures['failover_packets_to_old']} packets to the old master0)")
    return figures
