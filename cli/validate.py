"""`validate`: check a stack file offline (no engine, no network, no decryption)."""

from __future__ import annotations

import argparse
import sys

from config import ConfigError, load_stack_file, stack_file_path
from config.models import SECRET_PATHS

NAME = "validate"
HELP = "check Pulumi.<stack>.yaml against the config schema, offline"
DESCRIPTION = """\
Validate the stack config in Pulumi.<STACK>.yaml without running the Pulumi engine.

Encrypted (`secure:`) values count as present but are not decrypted, so content checks that
need them (PEM keys, htpasswd, inline kubeconfig) run only at `pulumi up`. The local files the
config names (SSH key, kubeconfig, image store, boot history) must exist and be readable;
relative paths are relative to the project directory. Every problem is
printed as `error: <field.path>: <what is wrong>`; the exit code is 0 when valid, 2 otherwise.
"""
EPILOG = """\
example:
  $ python -m cli validate --stack dev
  ok: stack dev is valid (5 hosts, 2 deploy hosts, 3 images)
"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, metavar="NAME", help="stack name; reads Pulumi.NAME.yaml")
    parser.add_argument(
        "--project-dir", default=".", metavar="DIR", help="directory holding Pulumi.yaml (default: current directory)"
    )


def run(args: argparse.Namespace) -> int:
    path = stack_file_path(args.stack, args.project_dir)
    try:
        config = load_stack_file(path, check_files=True)
    except ConfigError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return 2
    skipped = sorted(p for p in config.secure_paths if p in SECRET_PATHS)
    if skipped:
        print(f"note: encrypted, content not checked offline: {', '.join(skipped)}", file=sys.stderr)
    print(
        f"ok: stack {args.stack} is valid ({len(config.hosts)} hosts, "
        f"{len(config.deploy_hosts)} deploy hosts, {len(config.image_ids)} images)"
    )
    return 0
