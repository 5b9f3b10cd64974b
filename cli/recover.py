"""`recover master0`: move the registry to another master when master0 is dead."""

from __future__ import annotations

import argparse
import ipaddress
import time

from cli.change import (StackChange, Timer, confirm, finish, human_bytes, image_bytes, probe_one,
                        verify)
from cli.common import EXIT_DEGRADED, CliError, add_stack_arguments, guarded, load_config, resolve_local_path
from cli.probe import complete_images
from cli.status import add_access_arguments, stack_images
from config import StackConfig

NAME = "recover"
HELP = "make another master the registry's master0 (the old one is marked down, never dialled)"
DESCRIPTION = """\
Recover the registry after master0 died: `recover master0 --host NEW`.

1. Preflight, touching nothing: NEW must be a master of the cluster, a deploy host, not down,
   reachable over SSH within 3 s; in pre mode its replica must hold every image of the boot
   history; the local image store must hold every image; NEW needs disk space for the data it
   lacks. The old master0 is never dialled.
2. Sets master0 to NEW and adds the old master0 to down_hosts (through the engine), runs
   `pulumi preview` and prints the plan. With --preview the previous config is restored and
   nothing else happens.
3. Asks for confirmation (unless --yes), runs `pulumi up` with one line per step, then probes
   every live host as `status` does.
4. Prints old and new master0, nodes repointed, images verified and the time of each phase.

Exit codes: 0 recovered and verified; 1 `up` or the verification failed (a rerun is safe);
2 refused (bad input or preflight): nothing was changed. The engine's environment is the
operator's: `pulumi` on PATH (or --pulumi), PULUMI_BACKEND_URL / `pulumi login`,
PULUMI_CONFIG_PASSPHRASE.
"""
EPILOG = """\
examples:
  $ python -m cli recover master0 --host 198.18.0.12 --stack demo --preview
  $ python -m cli recover master0 --host 198.18.0.12 --stack demo --yes
"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["master0"], help="what to recover (only master0)")
    parser.add_argument("--host", required=True, metavar="IP", help="the master that becomes master0")
    add_stack_arguments(parser)
    parser.add_argument("--preview", action="store_true",
                        help="show the plan, then restore the config; change nothing")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_access_arguments(parser)


def parse_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise CliError(f"--host {value!r} is not an IP address") from None


def check_role(config: StackConfig, host: str) -> None:
    """The refusals that need only the config."""
    cluster = config.cluster
    if host not in config.hosts:
        raise CliError(f"{host} is not a host of cluster {cluster.name} "
                       f"(masters: {', '.join(cluster.masters)}; nodes: {', '.join(cluster.nodes) or 'none'})")
    if host not in cluster.masters:
        raise CliError(f"{host} is a node, not a master: master0 must be one of the masters "
                       f"({', '.join(cluster.masters)})")
    if host in config.down_hosts:
        raise CliError(f"{host} is listed in down_hosts; if it is back, take it off with "
                       f"`python -m cli rejoin --host {host} --stack <stack>` first")
    if host not in config.deploy_hosts:
        raise CliError(f"{host} is not a deploy host (registry.local_registry.deploy_hosts: "
                       f"{', '.join(config.deploy_hosts)}): it holds no registry files to serve from")


def rerun_hint(args: argparse.Namespace) -> str:
    return f"python -m cli recover master0 --host {args.host} --stack {args.stack} --yes"


@guarded
def run(args: argparse.Namespace) -> int:
    timer = Timer()
    start = time.monotonic()
    args.host = parse_ip(args.host)
    config, _ = load_config(args)
    host, old = args.host, config.master0
    check_role(config, host)
    images = stack_images(config, args.project_dir)  # a missing image refuses here (post and pre)
    probe = probe_one(config, args, host, images)
    if not probe.reachable:
        raise CliError(f"cannot reach {host} over SSH: {probe.error} (nothing was changed)")
    present = complete_images(images, probe.missing_refs)
    if config.distribution == "pre" and present < len(images):
        raise CliError(f"{host}'s replica holds {present} of {len(images)} images (missing "
                       f"{probe.missing_refs[0]}); in pre mode the new master0 must already hold "
                       "the data: run `pulumi up` while master0 is alive, or use post mode")
    store = resolve_local_path(config.apps.image_store, args.project_dir)
    needed = max(0, image_bytes(store, images) - probe.registry_bytes)
    if probe.disk_avail < needed:
        raise CliError(f"{host} has {human_bytes(probe.disk_avail)} free under {config.rootfs}, "
                       f"the registry data needs {human_bytes(needed)} more")
    timer.add("preflight", time.monotonic() - start)
    resume = host == old
    down = list(config.down_hosts) + ([] if resume or old in config.down_hosts else [old])
    print(f"preflight ok: {host} is a reachable master and deploy host; replica {present}/{len(images)} "
          f"images; {human_bytes(probe.disk_avail)} free ({timer.phases['preflight']:.1f}s)"
          + ("" if not resume else f"; master0 is already {host}: resuming"))

    change = StackChange(args)
    change.set(master0=host, down_hosts=down)
    plan = change.preview(master0=host, domain=config.registry.domain, down_hosts=down,
                          old_master0=old, timer=timer)
    print(f"plan for stack {args.stack} (pulumi preview, {timer.phases['preview']:.1f}s):")
    print(plan.text())
    if args.preview:
        change.restore()
        print(f"preview only: the stack config is restored (master0 {old}); nothing was changed")
        return 0
    if not confirm(f"recover: make {host} master0 of stack {args.stack}?", args.yes):
        change.restore()
        print("aborted: the stack config is restored; nothing was changed")
        return EXIT_DEGRADED
    print(f"pulumi up (stack {args.stack}):")
    change.up(timer, rerun_hint(args))
    print("verifying every live host:")
    after, result = verify(args, timer)
    print(f"recovered: master0 {old} -> {host}" if not resume else f"resumed: master0 {host}")
    print(f"  nodes repointed:  {len(plan.repointed)} ({', '.join(plan.repointed) or 'none'})")
    print(f"  images verified:  {result.master0_images}/{result.images_expected} on {host} "
          f"(registry-verify and the status probe)")
    print(f"  down_hosts:       {', '.join(after.down_hosts) or 'none'} (not contacted)")
    print(f"  time:             {timer.line()}")
    return finish(result, rerun_hint(args))
