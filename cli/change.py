"""What `recover` and `rejoin` share: change master0/down_hosts through the engine, preview and
print the plan, confirm, `up` with live progress, then verify with the status probe.

The stack file is saved before the change; a preview-only run, a refusal or an error before `up`
puts it back byte for byte. Once `up` has started the new config stays: the state may already
have moved, and every step is idempotent, so the fix is a rerun.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cli import plan as plan_mod
from cli.common import EXIT_DEGRADED, EXIT_OK, CliError, load_config
from cli.engine import PROJECT, Engine, UpFailed
from cli.probe import Assessment, HostProbe, SshAccess, all_refs, probe_command, probe_host, ssh_key_file
from cli.status import decrypter, probe_cluster, report, stack_images
from config import StackConfig
from config.image_store import StoredImage

PREFLIGHT_TIMEOUT_S = 10.0


@dataclass
class Timer:
    phases: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items())
        return f"{parts}; total {sum(self.phases.values()):.1f}s"


def probe_one(config: StackConfig, args: argparse.Namespace, ip: str,
              images: list[StoredImage]) -> HostProbe:
    """The status probe on one host (ConnectTimeout 3 s): nothing else is dialled."""
    with ssh_key_file(config, args.project_dir, args.ssh_key, decrypter(args)) as key:
        with SshAccess(config, key) as access:
            return probe_host(access, ip, probe_command(config, all_refs(images)), PREFLIGHT_TIMEOUT_S)


def image_bytes(store: Path, images: list[StoredImage]) -> int:
    total = 0
    for img in images:
        for root, _, files in os.walk(store / img.hex / "docker"):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
    return total


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise CliError("not confirmed: stdin is not a terminal; pass --yes to proceed without asking")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


class StackChange:
    """Changes master0 / down_hosts of one stack and rolls the file back unless `up` started."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.engine = Engine(args.stack, args.project_dir, args.pulumi)
        self.saved = self.engine.stack_file.read_bytes()
        self.committed = False

    def restore(self) -> None:
        if not self.committed:
            self.engine.stack_file.write_bytes(self.saved)

    def has_key(self, key: str) -> bool:
        doc = yaml.safe_load(self.saved) or {}
        return f"{PROJECT}:{key}" in (doc.get("config") or {})

    def set(self, *, master0: str | None, down_hosts: list[str]) -> None:
        had_down_hosts = self.has_key("down_hosts")
        try:
            if master0 is not None:
                self.engine.set_master0(master0, down_hosts, had_down_hosts)
            else:
                self.engine.set_down_hosts(down_hosts, had_down_hosts)
        except BaseException:
            self.restore()
            raise

    def preview(self, *, master0: str, domain: str, down_hosts: list[str],
                old_master0: str | None, timer: Timer) -> plan_mod.Plan:
        try:
            steps, seconds = self.engine.preview()
        except CliError as e:
            self.restore()
            raise CliError(f"{e.message} (the stack config is restored; nothing was changed)", e.code) from None
        except BaseException:
            self.restore()
            raise
        timer.add("preview", seconds)
        return plan_mod.render(steps.ops, master0=master0, domain=domain,
                               down_hosts=down_hosts, old_master0=old_master0)

    def up(self, timer: Timer, rerun: str):
        self.committed = True
        try:
            steps, seconds = self.engine.up()
        except UpFailed as e:
            raise CliError(f"pulumi up failed: {e.message}\nnote: the stack config keeps the "
                           f"change; after fixing the cause a rerun is safe (every step is "
                           f"idempotent): {rerun}", EXIT_DEGRADED) from None
        timer.add("up", seconds)
        return steps


def verify(args: argparse.Namespace, timer: Timer) -> tuple[StackConfig, Assessment]:
    """The status probe over every live host, with the config as `up` left it."""
    start = time.monotonic()
    config, _ = load_config(args)
    images = stack_images(config, args.project_dir)
    result = probe_cluster(config, args, images)
    timer.add("verify", time.monotonic() - start)
    report(config, result, time.monotonic() - start)
    return config, result


def finish(result: Assessment, rerun: str) -> int:
    if result.healthy:
        return EXIT_OK
    print(f"error: the status check after `up` found {len(result.problems)} problems (above); "
          f"a rerun is safe: {rerun}", file=sys.stderr)
    return EXIT_DEGRADED
