"""How the files under ``scripts/`` run on hosts: ``bash -s -- ARGS`` with the script on stdin.

The command line stays short (it is what an error message, a diff and a host's process list
show), while the script's text (compacted: see ``compact``) is part of the resource's inputs, so
an edited script reruns where it is used. Data a script reads (a tar of rootfs files, a CA, a password, an SSH key)
follows the script on the same stdin: bash reads a script from a pipe line by line, so the
script's last line ``main "$@"; exit`` runs ``main`` with the rest of stdin as its input and
nothing after it is ever parsed as commands. One SSH session per change; secrets only on stdin.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from typing import TYPE_CHECKING

import pulumi
from pulumi_command import local, remote

if TYPE_CHECKING:
    from components.access import SshAccess

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"
LAST_LINE = 'main "$@"\n'


_LIB = re.compile(r'^\s*source "\$\{BASH_SOURCE\[0\]%/\*\}/lib/([a-z-]+\.sh)"\s*$', re.M)
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def compact(text: str) -> str:
    """The script without its comment-only and blank lines, heredoc bodies kept verbatim. What
    runs is unchanged (tests/unit/test_remote_scripts.py compares bash's own listing of every
    function), the state of each step holding it is smaller, and a comment edit reruns nothing."""
    out: list[str] = []
    ending: str | None = None
    for line in text.splitlines():
        if ending is not None:
            out.append(line)
            if line.strip() == ending:
                ending = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        out.append(line)
        m = _HEREDOC.search(line)
        if m:
            ending = m.group(2)
    return "\n".join(out) + "\n"


@cache
def script_body(name: str) -> str:
    """lib/common.sh, the other libs the script sources, then the script, its last line made to
    exit right after ``main``; each compacted."""
    text = (SCRIPTS_DIR / name).read_text()
    if not text.endswith(LAST_LINE):
        raise ValueError(f"scripts/{name} must end with the line {LAST_LINE!r}")
    libs = ["common.sh", *(lib for lib in _LIB.findall(text) if lib != "common.sh")]
    parts = [compact((SCRIPTS_DIR / "lib" / lib).read_text()) for lib in libs]
    return (f"SCRIPT_NAME={shlex.quote(name)}\n{''.join(parts)}"
            f"{compact(text[:-len(LAST_LINE)])}main \"$@\"; exit \"$?\"\n")


@dataclass(frozen=True)
class ScriptRun:
    command: pulumi.Input[str]  # a str unless an argument is an Output (a probed generation)
    stdin: pulumi.Input[str]


def _command(args: tuple) -> str:
    return " ".join(["bash", "-s", "--", *(shlex.quote(str(a)) for a in args)])


def script_run(name: str, *args: pulumi.Input[str], data: pulumi.Input[str] | None = None) -> ScriptRun:
    """Runs ``scripts/<name> ARGS`` reading ``data`` on its stdin. A secret ``data`` keeps the
    whole stdin secret. An Output argument makes the command an Output (never pass a secret:
    the command line is what errors, diffs and process lists show)."""
    if any(isinstance(a, pulumi.Output) for a in args):
        command: pulumi.Input[str] = pulumi.Output.all(*args).apply(lambda v: _command(tuple(v)))
    else:
        command = _command(args)
    body = script_body(name)
    if data is None:
        return ScriptRun(command, body)
    if isinstance(data, str):  # outside a Pulumi program (the CLI's probes, tests)
        return ScriptRun(command, body + data)
    return ScriptRun(command, pulumi.Output.from_input(data).apply(lambda d: body + d))


def host_step(name: str, access: "SshAccess", ip: str, run: ScriptRun, *,
              quiet: bool = False, opts: pulumi.ResourceOptions | None = None,
              triggers: list | None = None) -> remote.Command:
    """A step on host ``ip``: ``run`` over SSH as root (through `sudo -n` for another user), no
    delete command (dropping the step never dials the host). ``quiet`` for steps whose stdin
    holds secrets: nothing is logged and the output is stored as a secret."""
    if quiet:
        secret_out = pulumi.ResourceOptions(additional_secret_outputs=["stdout", "stderr"])
        opts = secret_out if opts is None else opts.merge(secret_out)
    create = (run.command.apply(lambda c: access.as_root(ip, c)) if isinstance(run.command, pulumi.Output)
              else access.as_root(ip, run.command))
    return remote.Command(
        name, connection=access.connection(ip), create=create,
        stdin=run.stdin, triggers=triggers,
        # Else an update asks sshd to SetEnv the previous output, which stock sshd refuses.
        add_previous_output_in_env=False,
        logging=remote.Logging.NONE if quiet else remote.Logging.STDOUT_AND_STDERR,
        opts=opts)


def local_step(name: str, run: ScriptRun, *, opts: pulumi.ResourceOptions | None = None) -> local.Command:
    """A step on the machine that runs `pulumi` (e.g. rsync to a host); stderr is logged."""
    return local.Command(name, create=run.command, stdin=run.stdin,
                         add_previous_output_in_env=False, logging=local.Logging.STDERR, opts=opts)
