"""`python -m cli <command>`: operator commands around the sealer-registry stack.

Each command is a module in this package exposing
    NAME: str, HELP: str
    register(parser: argparse.ArgumentParser) -> None   # add its arguments
    run(args: argparse.Namespace) -> int                # exit code
and is listed in COMMANDS below. What they share:

    common.py   exit codes (0 ok, 1 degraded, 2 refused, 130 interrupted: see its docstring),
                CliError, the --stack/--project-dir/--pulumi, --ssh-key and --json arguments
    session.py  Session: the stack (--stack, else the engine's selected stack), its config,
                topology and images, one engine, SSH access; made once per command
    engine.py   the Pulumi engine (Automation API): select, config set/get, preview, up
    ssh.py, probe.py, health.py   reach the hosts, run the status probe, judge it
    fleet.py    `status --all`: the backend's stacks, each checked as `status` does, at once,
                one bound on SSH sessions over all of them
    change.py   the one flow of recover and rejoin (set, preview, plan, confirm, up, check)
    failover.py the watcher's decisions (quorum, window, hold-down), pure; watch.py does the I/O
    clusterfile.py  sealer's Clusterfile read for `adopt` (hosts, roles, ssh, registry)
    plan.py     a preview's steps read back as a plan (step names from topology.py)
"""

from __future__ import annotations

import argparse
import importlib
from typing import Sequence

# Command modules, in --help order.
COMMANDS: tuple[str, ...] = (
    "cli.adopt",
    "cli.validate",
    "cli.init_pki",
    "cli.haproxy_bundle",
    "cli.pin_images",
    "cli.status",
    "cli.recover",
    "cli.rejoin",
    "cli.watch",
)

_EPILOG = """\
Without --stack a command works on the stack `pulumi stack select` chose, as `pulumi` does.
Exit codes: 0 ok; 1 degraded (status found a problem; recover/rejoin: `up` or the check after
it failed, a rerun is safe; or not confirmed); 2 refused, nothing changed; 130 interrupted.

examples:
  python -m cli adopt --from 192.168.0.2 --stack prod --ssh-key ~/.ssh/id_rsa
  python -m cli validate --stack dev
  python -m cli init-pki --stack prod
  python -m cli status --stack prod
  python -m cli status --json
  python -m cli status --all --sessions 16
  python -m cli recover master0 --host 198.18.0.12 --stack prod --preview
  python -m cli rejoin --host 198.18.0.11 --stack prod --yes
  python -m cli watch --stack prod --window 6s --hold-down 60s
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cli",
        description="Operate the sealer-registry Pulumi project (builtin registry of a sealer cluster).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        module = importlib.import_module(module_name)
        sub = commands.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.register(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))
