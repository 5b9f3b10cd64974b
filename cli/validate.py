"""`validate`: check a stack file offline (no engine, no network, no decryption)."""

from __future__ import annotations

import argparse
import sys

from cli.common import EXIT_OK, add_stack_arguments, guarded
from cli.session import Session
from config.stack import is_secret_path

NAME = "validate"
HELP = "check Pulumi.<stack>.yaml against the config schema, offline"
DESCRIPTION = """\
Validate the stack config in Pulumi.<STACK>.yaml without running the Pulumi engine.

Encrypted (`secure:`) values count as present but are not decrypted, so content checks that
need them (PEM keys, htpasswd, inline kubeconfig) run only at `pulumi up`. The local files the
config names (SSH key, kubeconfig, image store, boot history) must exist and be readable;
relative paths are relative to the project directory. Every problem is
printed as `error: <field.path>: <what is wrong>`; the exit code is 0 when valid, 2 otherwise.
Without --stack the engine is asked which stack is selected; nothing else needs it.
"""
EPILOG = """\
example:
  $ python -m cli validate --stack dev
  ok: stack dev is valid (5 hosts, 2 deploy hosts, 3 images)
"""


def register(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    with Session(args, check_files=True) as session:
        config = session.config
    skipped = sorted(p for p in config.secure_paths if is_secret_path(p))
    if skipped:
        print(f"note: encrypted, content not checked offline: {', '.join(skipped)}", file=sys.stderr)
    print(
        f"ok: stack {args.stack} is valid ({len(config.hosts)} hosts, "
        f"{len(config.deploy_hosts)} deploy hosts, {len(config.image_ids)} images)"
    )
    return EXIT_OK
