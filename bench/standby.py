"""Pulls while master0 is dead, with warm standby (`registry.local_registry.standby: warm`): every
boot-history image pulled on a node through sea.hub with the node's containerd and the
/etc/containerd/certs.d the program wrote (lab/pull.py: as the CRI pulls, credentials handed to
each host), one image after the other, first with master0 alive, then with master0 killed
(packets dropped, processes frozen). containerd 1.6 ignores hosts.toml's dial_timeout, so each
request first waits its 30 s connect timeout on the dead master0, then tries the next host.

For the design trade-off, the same pulls once more with the node's hosts.toml in the order a
watcher could switch to (the warm standbys first, master0 last), then the program's file put back.
"""

from __future__ import annotations

from typing import Callable

from lab.hosts import Lab
from lab.pull import PullRound, pull_round
from lab.stack import DOMAIN, PASSWORD, PORT, LabEnv

HOSTS_TOML = f"/etc/containerd/certs.d/{DOMAIN}:{PORT}/hosts.toml"
OUTAGE_PULL_TIMEOUT_S = 600


def replicas_first(text: str) -> str:
    """The program's hosts.toml with its [host] tables reordered: the warm standbys first, then
    master0 (through the domain). containerd tries the tables in file order."""
    head, *tables = text.split("\n[host.")
    tables = ["[host." + t.rstrip("\n") + "\n" for t in tables]
    master0 = [t for t in tables if t.startswith(f'[host."https://{DOMAIN}:')]
    others = [t for t in tables if t not in master0]
    return head.rstrip("\n") + "\n\n" + "\n".join(others + master0)


def figures(prefix: str, rnd: PullRound) -> dict:
    return {f"{prefix}_max_s": round(max(rnd.seconds), 2),
            f"{prefix}_total_s": round(sum(rnd.seconds), 2),
            f"{prefix}_failures": len(rnd.failures)}


def measure(lab: Lab, env: LabEnv, log: Callable[[str], None]) -> dict:
    """The figures (seconds per image pull, failures) of a warm-standby stack deployed on ``env``;
    leaves master0 killed then revived, the node's hosts.toml as the program wrote it."""
    node, m0 = env.nodes[0], env.masters[0]

    def pulls(title: str, timeout: int = 120) -> PullRound:
        rnd = pull_round(lab, node, env.refs, "admin", PASSWORD, DOMAIN, PORT, timeout=timeout)
        log(f"{title}: {len(rnd.pulls)} images, {len(rnd.failures)} failures, "
            f"max {max(rnd.seconds):.1f}s, total {sum(rnd.seconds):.1f}s, "
            f"{rnd.hops()} host fallbacks logged")
        for line in rnd.lines():
            log(f"  {line}")
        return rnd

    out = {"standby_images": len(env.refs)}
    out.update(figures("standby_pull_alive", pulls("master0 alive")))
    lab.kill(m0)
    try:
        out.update(figures("standby_pull_dead", pulls("master0 dead, master0 first (the program's order)",
                                                      OUTAGE_PULL_TIMEOUT_S)))
        written = lab.run(node, f"cat {HOSTS_TOML}").stdout
        lab.run(node, f"cat > {HOSTS_TOML}", input=replicas_first(written))
        try:
            out.update(figures("standby_pull_dead_replicas_first",
                               pulls("master0 dead, warm standbys first", OUTAGE_PULL_TIMEOUT_S)))
        finally:
            lab.run(node, f"cat > {HOSTS_TOML}", input=written)
    finally:
        lab.revive(m0)
    return out
