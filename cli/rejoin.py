"""`rejoin`: take a revived host off down_hosts and bring it in line with the current master0."""

from __future__ import annotations

import argparse
import time

from cli import apiserver
from cli.change import Change, Outcome, Timer, apply_change, finish, preflight_probe
from cli.common import CliError, add_ssh_key_argument, add_stack_arguments, guarded, parse_ip
from cli.session import Session

NAME = "rejoin"
HELP = "take a revived host off down_hosts (probed first) and run up"
DESCRIPTION = """\
Bring a host that was listed in down_hosts (typically the old master0) back: probe it over SSH
(3 s) and check that the apiserver the records will then go through answers (5 s) first, take
it off down_hosts through the engine, preview and print the plan, confirm (unless --yes), run
`pulumi up` with one line per step, and probe every live host. The rejoined
host's scripts are idempotent: its registry domain points at the current master0, it trusts the
same CA, and a registry it still runs is stopped when it is not master0.

Exit codes: 0 rejoined and verified; 1 `up` or the verification failed (a rerun is safe), or not
confirmed; 2 refused: nothing was changed.
"""
EPILOG = """\
example:
  $ python -m cli rejoin --host 198.18.0.11 --stack demo --yes
"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, metavar="IP", help="the host to take off down_hosts")
    add_stack_arguments(parser)
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_ssh_key_argument(parser)


def rerun_hint(args: argparse.Namespace) -> str:
    return f"pulumi up --stack {args.stack}"


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    timer = Timer()
    start = time.monotonic()
    args.host = parse_ip(args.host)
    with Session(args) as session:
        config = session.config
        host = args.host
        if host not in [h.ip for h in session.topology.hosts]:
            raise CliError(f"{host} is not a host of cluster {config.cluster.name} "
                           f"(hosts: {', '.join(config.hosts)})")
        if not session.topology.host(host).down:
            raise CliError(f"{host} is not listed in down_hosts "
                           f"({', '.join(config.down_hosts) or 'empty'}): nothing to rejoin")
        session.images  # a missing image refuses before the host is dialled
        probe = preflight_probe(session, host)
        if not probe.reachable:
            raise CliError(f"cannot reach {host} over SSH: {probe.error}; it stays in down_hosts")
        down = [ip for ip in config.down_hosts if ip != host]
        api = apiserver.check(session, down)
        timer.add("preflight", time.monotonic() - start)
        print(f"preflight ok: {host} answers over SSH; its registry is {probe.registry}, "
              f"{config.registry.domain} points to {probe.resolves or 'nothing'} there; the "
              f"records go through the apiserver {api.endpoint}, which answers")

        result = apply_change(session, Change(
            master0=None, down_hosts=down,
            rerun=rerun_hint(args),
            question=f"rejoin: take {host} off down_hosts of stack {session.stack}?"),
            timer, args.yes)
        if result.outcome is Outcome.APPLIED:
            print(f"rejoined: {host} (master0 stays {config.master0})")
            print(f"  time: {timer.line()}")
        return finish(result, rerun_hint(args))
