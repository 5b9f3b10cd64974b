"""Pieces every command shares: the exit codes, the error type, the stack arguments, `--json`.

Exit codes, the same for every command:

    0    done; `status`: healthy
    1    degraded: `status` found a problem on the hosts; `recover`/`rejoin`: `up` or the
         status check after it failed (every step is idempotent: a rerun is safe), or the
         operator did not confirm
    2    refused: bad arguments, an invalid stack config, no stack named or selected, a refused
         preflight; nothing was changed
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """One clear line (or one per config problem) for the operator; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED, detail: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        # Extra keys of the `--json` error document (a refusal's facts, documented per command).
        self.detail = detail or {}


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", metavar="NAME",
                        help="stack name; its config is Pulumi.NAME.yaml (default: the stack "
                             "selected with `pulumi stack select`, as `pulumi` itself uses)")
    parser.add_argument("--project-dir", default=".", metavar="DIR",
                        help="directory holding Pulumi.yaml (default: current directory)")
    parser.add_argument("--pulumi", metavar="PATH",
                        help="the pulumi CLI to use (default: `pulumi` on PATH)")


def add_ssh_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ssh-key", metavar="PATH",
                        help="SSH private key (default: cluster.ssh.private_key_path; a key kept "
                             "as a secret in the stack is decrypted through the engine)")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (keys: see above) and the progress "
                             "on stderr; errors are in the object too")


def parse_ip(value: str) -> str:
    """``--host``'s value, normalised; CliError if it is not an IP address."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise CliError(f"--host {value!r} is not an IP address") from None


def resolve_local_path(value: str, project_dir: str | os.PathLike) -> Path:
    """A path from the stack config as the program reads it: `~` expanded, relative to the
    project directory (the engine runs the program there)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(project_dir) / path).resolve()


def print_error(message: str) -> None:
    for line in message.splitlines() or [message]:
        print(line if line.startswith("error:") else f"error: {line}", file=sys.stderr)


def print_json(document: dict) -> None:
    print(json.dumps(document, indent=2, sort_keys=True))


def error_document(command: str, args: argparse.Namespace, code: int, message: str,
                   detail: dict | None = None) -> dict:
    """What `--json` prints when a command stops with an error: the keys every document has,
    and the refusal's own keys (``detail``) when it has some."""
    text = "\n".join(line.removeprefix("error: ") for line in message.splitlines())
    return {**(detail or {}), "command": command, "stack": getattr(args, "stack", None),
            "exit_code": code, "error": text}


def guarded(command: str):
    """Decorates a command's `run`: a CliError becomes its message on stderr (and, with --json,
    an error document on stdout) and its exit code."""
    def decorate(run):
        def wrapper(args: argparse.Namespace) -> int:
            detail = None
            try:
                return run(args)
            except CliError as e:
                code, message, detail = e.code, e.message, e.detail
            except KeyboardInterrupt:
                code, message = EXIT_INTERRUPTED, "interrupted"
            print_error(message)
            if getattr(args, "json", False):
                print_json(error_document(command, args, code, message, detail))
            return code
        wrapper.__name__ = run.__name__
        wrapper.__doc__ = run.__doc__
        return wrapper
    return decorate
