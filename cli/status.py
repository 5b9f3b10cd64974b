"""`status`: one row per cluster host, read over SSH in parallel; exit 0 healthy, 1 degraded.
`status --all`: one row per stack of the project (cli/fleet.py)."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from cli import fleet
from cli.common import (EXIT_DEGRADED, EXIT_OK, CliError, add_json_argument,
                        add_ssh_key_argument, add_stack_arguments, guarded, print_json)
from cli.health import check_cluster, health_json, report
from cli.session import Session

NAME = "status"
HELP = ("show each host's registry side (reachable, registry, data, sea.hub, CA, containerd, "
        "images it lacks); exit 1 if degraded")
DESCRIPTION = """\
Probe every cluster host over SSH (one session per host, all at once, ConnectTimeout 3 s) and print
one row per host: whether it is reachable, its role, whether it is a deploy host, whether a
registry answers there ("read-only" for a warm standby's), how many images of the boot history its registry data holds completely
(each image.json ref's tag link names its digest and the manifest blob exists), its replica
stamp (REPLICA: where the data was copied from, "self" on the source, and how long ago; "none"
when no complete copy is stamped: a deploy host that should hold data then is a problem), where the registry
domain points, whether its CA trust equals the configured CA, and whether the containerd that
serves its CRI reads /etc/containerd/certs.d (CRI config_path from `containerd config dump` of the
running daemon's config; "stale" when that config changed after the daemon started; "no-cri" and
"-" are fine: the kubelet does not pull through containerd there). Hosts in down_hosts are not
dialled. With registry.local_registry.ha (sealer's HA layout) every master is "launch": each must
run its registry read-write and map the domain to itself, a node must map it somewhere (lvscare's
VIP), and no replica stamp is expected. Reads the stack config offline from Pulumi.<STACK>.yaml;
the image store named there gives the expected images.

LACKS: what a deploy host lacks of the data it should hold. Without HA, a replica whose stamp's
tree is not master0's live tree (`sealer run <app>` adds data on master0 only) lags master0: it
lacks master0's <rootfs>/cache/registry/<id> flag ids it does not hold ("N images"; "tree" when
no flag names the difference, e.g. a push); a problem line names each id and where it is. In HA
each live master is judged against the others: it lacks the ids of the union of their flags it
does not hold, and is behind when its tree differs from the tree of the master holding the most
files. "none": in sync; "-": not judged (not a deploy host, or no tree).

--json prints one object instead of the table:
  command "status", stack, exit_code, error (null unless the command failed; then only these
  four keys), healthy, master0, domain, images_expected, master0_images, seconds, problems
  [text], hosts [{ip, role (master0|master|node), deploy (launch|standby|none), down,
  reachable (null when down), error, registry (running|stopped|null), registry_mode (read-only|
  read-write while running, else null; a warm standby serves read-only), images (complete images
  on a deploy host, else null), resolves ("" when the domain maps to nothing, null when not
  probed), ca (ok|differs|partial|absent|-|null), replica (null, or {source, age_s, files,
  bytes}: the replica stamp of a deploy host), tree (null, or {digest, files, bytes}: a deploy
  host's live registry tree, hashed as the stamp's tree), flags (how many cache/registry image
  flags a deploy host holds, else null), lacking (null when in sync or not judged, else {ids
  [image ids it lacks], behind (its tree differs from the reference's), reference}), entry
  (null, or the node entry point's servers [{address, status, backup}]), entry_error,
  fence_pending (true only in `recover`'s check between its two phases: the host's entry point
  still lists the old master0; not probed unless sampled)}].

--all: every stack of the project instead of one, for an operator with many clusters (one stack
each). The stacks are the engine's own listing (`pulumi stack ls --json` in --project-dir: the
backend of PULUMI_BACKEND_URL or `pulumi login`, file://, postgres://, s3:// or the Cloud alike)
and every Pulumi.<stack>.yaml there that the backend lacks ("not in backend"). Each stack is
checked as `status --stack NAME` checks it, all at once, with at most --sessions SSH sessions open
at any moment over all stacks together (default 16). One row per stack: STACK, MASTER0, HOSTS
(reachable/listed, down hosts count in the total), STATUS (healthy|degraded|error), PROBLEMS,
IMAGES (complete images on master0 / expected), LAST UPDATE (from the listing), UPDATING (yes/no
when the backend reports an update in progress, "-" when it does not say). A stack whose config
does not validate, whose secrets the engine cannot decrypt or that cannot be probed is an
"error" row, its `error: STACK: ...` lines (the field and value) under the table; the other
stacks go on. Each degraded stack's problems follow as `problem: STACK: ...`. Secrets are
decrypted with `pulumi config get --stack` (the selected stack is left as it is); --ssh-key, if
given, is used for every stack.

--all --json prints one object: command "status", stack null, exit_code, error (null unless the
command itself failed, e.g. the listing), all true, healthy (every stack healthy), seconds, and
stacks [{stack, status (healthy|degraded|error), exit_code, error (null, or the stack's error
lines), master0, hosts_total, hosts_reachable, in_backend, last_update (RFC 3339 or null),
update_in_progress (true|false|null: not reported), resource_count, seconds, and, when the stack
was probed, the keys of `status --json` above (healthy, domain, images_expected, master0_images,
problems, hosts)}].

Exit codes: 0 healthy, 1 degraded (each problem is printed), 2 bad input. With --all: 0 every
stack healthy, 1 any stack degraded or in error, 2 bad input (no stack at all, the listing
failed, --all with --stack).
"""
EPILOG = """\
example:
  $ python -m cli status --stack demo
  HOST         ROLE     REACHABLE  DEPLOY   REGISTRY  IMAGES  REPLICA         SEA.HUB ->   CA  CONTAINERD  LACKS
  198.18.0.11  master0  yes        launch   running   4/4     self 3m         198.18.0.11  ok  certs.d     none
  198.18.0.12  master   yes        standby  stopped   4/4     198.18.0.11 3m  198.18.0.11  ok  certs.d     1 image
  198.18.0.21  node     yes        -        -         -       -               198.18.0.11  ok  certs.d     -
  problem: 198.18.0.12: its replica lags master0 198.18.0.11 (stamp tree is not master0's live tree: data added on master0 after the last `up`, e.g. `sealer run <app>`) and lacks images 5f0e...c1 (on 198.18.0.11); `pulumi up` copies it
  degraded (1 problems): master0 198.18.0.11 serves 4/4 images; 3 of 3 live hosts point at it (0.9s)
  $ python -m cli status --json | jq -r '.hosts[] | select(.reachable == false) | .ip'
  $ python -m cli status --json | jq -r '.hosts[] | select(.lacking) | "\(.ip) \(.lacking.ids)"'
  $ python -m cli status --all
  STACK  MASTER0       HOSTS  STATUS    PROBLEMS  IMAGES  LAST UPDATE  UPDATING
  east   198.18.0.11   2/2    healthy   0         3/3     4m ago       no
  west   198.18.0.12   2/2    degraded  1         3/3     4m ago       no
  north  -             -      error     -         -       2d ago       -
  error: north: registry.port: 99999 is not a valid port (1-65535)
  problem: west: 198.18.0.12 (master0) runs no registry
  degraded: 3 stacks: 1 healthy, 1 degraded, 1 error (3.1s)
  $ python -m cli status --all --json | jq -r '.stacks[] | select(.status != "healthy") | .stack'
"""


def sessions_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    add_ssh_key_argument(parser)
    add_json_argument(parser)
    parser.add_argument("--all", action="store_true",
                        help="every stack of the project's backend (and Pulumi.<stack>.yaml), one "
                             "row per stack's cluster")
    parser.add_argument("--sessions", type=sessions_count, default=fleet.DEFAULT_SESSIONS,
                        metavar="N",
                        help="with --all: at most N SSH sessions at once over all stacks "
                             f"(default {fleet.DEFAULT_SESSIONS})")


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    if args.all:
        return run_all(args)
    with Session(args) as session:
        session.images  # a missing image store refuses before any host is dialled
        start = time.monotonic()
        result = check_cluster(session)
        seconds = time.monotonic() - start
        code = EXIT_OK if result.healthy else EXIT_DEGRADED
        if args.json:
            print_json({"command": NAME, "stack": session.stack, "exit_code": code, "error": None,
                        **health_json(session.config, result, seconds)})
        else:
            report(session.config, result, seconds)
        return code


def run_all(args: argparse.Namespace) -> int:
    if args.stack:
        raise CliError("--all checks every stack: leave out --stack")
    project_dir = Path(args.project_dir).resolve()
    listed = fleet.list_backend_stacks(project_dir, args.pulumi)
    entries = fleet.join_stacks(listed, fleet.stack_file_names(project_dir))
    if not entries:
        raise CliError(f"no stack to check: the backend lists none for {project_dir} and it holds "
                       "no Pulumi.<stack>.yaml")
    start = time.monotonic()
    rows = fleet.check_stacks(entries, args, args.sessions)
    seconds = time.monotonic() - start
    code = EXIT_OK if all(r.state == "healthy" for r in rows) else EXIT_DEGRADED
    if args.json:
        print_json({"command": NAME, "stack": None, "exit_code": code, "error": None,
                    **fleet.fleet_json(rows, seconds)})
    else:
        now = datetime.datetime.now(datetime.timezone.utc)
        for line in fleet.report_lines(rows, seconds, now):
            print(line, file=sys.stdout)
    return code
