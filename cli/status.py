"""`status`: one row per cluster host, read over SSH in parallel; exit 0 healthy, 1 degraded."""

from __future__ import annotations

import argparse
import sys
import time

from cli.common import EXIT_DEGRADED, EXIT_OK, CliError, add_stack_arguments, guarded, load_config, resolve_local_path
from cli.probe import Assessment, SshAccess, all_refs, assess, probe_command, probe_hosts, render_table, ssh_key_file
from config import ConfigError, StackConfig
from config.image_store import StoredImage, load_images

NAME = "status"
HELP = ("show each host's registry side (reachable, registry, data, sea.hub, CA, containerd); "
        "exit 1 if degraded")
DESCRIPTION = """\
Probe every cluster host over SSH (one session per host, all at once, ConnectTimeout 3 s) and print
one row per host: whether it is reachable, its role, whether it is a deploy host, whether a
registry answers there, how many images of the boot history its registry data holds completely
(each image.json ref's tag link names its digest and the manifest blob exists), where the registry
domain points, whether its CA trust equals the configured CA, and whether the containerd that
serves its CRI reads /etc/containerd/certs.d (CRI config_path from `containerd config dump` of the
running daemon's config; "stale" when that config changed after the daemon started; "no-cri" and
"-" are fine: the kubelet does not pull through containerd there). Hosts in down_hosts are not
dialled. Reads the stack config offline from Pulumi.<STACK>.yaml; the image store named there
gives the expected images.

Exit codes: 0 healthy, 1 degraded (each problem is printed), 2 bad input.
"""
EPILOG = """\
example:
  $ python -m cli status --stack demo
  HOST         ROLE     REACHABLE  DEPLOY   REGISTRY  IMAGES  SEA.HUB ->   CA  CONTAINERD
  198.18.0.11  master0  yes        launch   running   4/4     198.18.0.11  ok  certs.d
  198.18.0.12  master   yes        standby  stopped   4/4     198.18.0.11  ok  certs.d
  198.18.0.21  node     yes        -        -         -       198.18.0.11  ok  certs.d
  healthy: master0 198.18.0.11 serves 4/4 images; 3 of 3 live hosts point at it (0.9s)
"""


def register(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    add_access_arguments(parser)


def add_access_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ssh-key", metavar="PATH",
                        help="SSH private key (default: cluster.ssh.private_key_path; a key kept "
                             "as a secret in the stack is decrypted through the engine)")
    parser.add_argument("--pulumi", metavar="PATH",
                        help="the pulumi CLI to use (default: `pulumi` on PATH)")


def stack_images(config: StackConfig, project_dir: str) -> list[StoredImage]:
    """The images the registry must serve, from the local image store the config names."""
    store = resolve_local_path(config.apps.image_store, project_dir)
    try:
        return load_images(store, config.image_ids)
    except ConfigError as e:
        raise CliError("\n".join(e.lines())) from None


def decrypter(args: argparse.Namespace):
    def decrypt() -> str:
        from cli.engine import Engine
        return Engine(args.stack, args.project_dir, args.pulumi).get_value("cluster.ssh.private_key") + "\n"
    return decrypt


def probe_cluster(config: StackConfig, args: argparse.Namespace,
                  images: list[StoredImage]) -> Assessment:
    live = [ip for ip in config.hosts if ip not in config.down_hosts]
    with ssh_key_file(config, args.project_dir, args.ssh_key, decrypter(args)) as key:
        with SshAccess(config, key) as access:
            probes = probe_hosts(access, live, probe_command(config, all_refs(images)))
    return assess(config, images, probes)


def summary_line(config: StackConfig, result: Assessment, seconds: float) -> str:
    live = [r for r in result.rows if r.reachable != "down (listed)"]
    pointing = sum(1 for r in live if r.resolves == config.master0)
    down = len(result.rows) - len(live)
    tail = f"; {down} listed down, not probed" if down else ""
    head = "healthy" if result.healthy else f"degraded ({len(result.problems)} problems)"
    return (f"{head}: master0 {config.master0} serves {result.master0_images}/{result.images_expected} "
            f"images; {pointing} of {len(live)} live hosts point at it{tail} ({seconds:.1f}s)")


def report(config: StackConfig, result: Assessment, seconds: float, out=sys.stdout) -> None:
    print(render_table(result.rows, config.registry.domain), file=out)
    for problem in result.problems:
        print(f"problem: {problem}", file=out)
    print(summary_line(config, result, seconds), file=out)


@guarded
def run(args: argparse.Namespace) -> int:
    config, _ = load_config(args)
    images = stack_images(config, args.project_dir)
    start = time.monotonic()
    result = probe_cluster(config, args, images)
    report(config, result, time.monotonic() - start)
    return EXIT_OK if result.healthy else EXIT_DEGRADED
