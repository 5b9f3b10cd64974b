"""Pieces every command shares: the error type, exit codes, reading a stack offline."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from config import ConfigError, StackConfig, load_stack_file, stack_file_path

EXIT_OK = 0
EXIT_DEGRADED = 1   # status: something is wrong on the hosts; recover/rejoin: the run failed
EXIT_REFUSED = 2    # bad input or a refused preflight: nothing was touched


class CliError(Exception):
    """One clear line for the operator; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED):
        super().__init__(message)
        self.message = message
        self.code = code


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, metavar="NAME",
                        help="stack name; its config is Pulumi.NAME.yaml")
    parser.add_argument("--project-dir", default=".", metavar="DIR",
                        help="directory holding Pulumi.yaml (default: current directory)")


def load_config(args: argparse.Namespace) -> tuple[StackConfig, Path]:
    """The validated stack config, offline. A ConfigError becomes one CliError whose message holds
    one `error:` line per problem."""
    path = stack_file_path(args.stack, args.project_dir)
    try:
        return load_stack_file(path), path
    except ConfigError as e:
        raise CliError("\n".join(e.lines())) from None


def resolve_local_path(value: str, project_dir: str | os.PathLike) -> Path:
    """A path from the stack config as the program reads it: `~` expanded, relative to the
    project directory (the engine runs the program there)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(project_dir) / path).resolve()


def print_error(message: str) -> None:
    for line in message.splitlines() or [message]:
        print(line if line.startswith("error:") else f"error: {line}", file=sys.stderr)


def guarded(run):
    """Decorates a command's `run`: a CliError becomes its message on stderr and its exit code."""
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except CliError as e:
            print_error(e.message)
            return e.code
        except KeyboardInterrupt:
            print_error("interrupted")
            return 130
    wrapper.__name__ = run.__name__
    wrapper.__doc__ = run.__doc__
    return wrapper
