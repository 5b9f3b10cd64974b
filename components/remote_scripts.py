"""How the files under ``scripts/`` run on hosts: ``bash -s -- ARGS`` with the script on stdin.

The command line stays short (it is what an error message, a diff and a host's process list
show), while the script's text (compacted: see ``compact``) is part of the resource's inputs, so
an edited script reruns where it is used. Data a script reads (a tar of rootfs files, a CA, a password, an SSH key)
follows the script on the same stdin: bash reads a script from a pipe line by line, so the
script's last line ``main "$@"; exit`` runs ``main`` with the rest of stdin as its input and
nothing after it is ever parsed as commands. One SSH session per change; secrets only on stdin.
"""

from __future__ import annotations

import hashlib
import os
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
# Staged payloads (see ``staged_run``) on the operator's machine, by content: the engine keeps a
# file asset's path and hash in the state, not its bytes.
PAYLOADS_DIR = Path(__file__).resolve().parent.parent / ".cache" / "payloads"
# Where a host keeps its staged payload: relative, so in the SSH login user's home (sftp's and the
# command's working directory; `sudo` keeps it). Only that user and root can change it, and the
# user can become root anyway: checking the sha256 and then reading the file gives nobody more.
STAGED_PATH = ".sealer-registry-node.run"
# Checks the staged payload against the sha256 the program computed, then runs it as the step
# ran its stdin before. Arguments: SHA256 FILE ARG...
RUN_STAGED = ('f=$2; echo "$1  $f" | sha256sum --quiet -c - >/dev/null 2>&1 || { '
              'echo "$f on $(hostname) is not the payload $1 the program staged (pulumi up '
              '--replace on its payload-<ip> step copies it again)" >&2; exit 1; }; '
              'shift 2; exec bash -s -- "$@" <"$f"')


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
    stdin: pulumi.Input[str] | None  # None: nothing on stdin (a staged run)


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


@dataclass(frozen=True)
class StagedRun:
    """A script run whose script and data sit in a file on the host (``payload``, copied there by
    a CopyToRemote step) instead of in the step's stdin: a step's stdin is stored in the state
    twice (inputs and outputs), 57 KB for each node's configure-node.sh and CA, and the engine
    rewrites the whole state when each step starts and ends."""

    payload: Path           # on the operator's machine, named by its sha256
    sha256: str
    command: str            # bash -c RUN_STAGED ... SHA256 STAGED_PATH ARG...


def staged_run(name: str, *args: str, data: str = "") -> StagedRun:
    """``scripts/<name> ARGS`` with ``data`` on its stdin, staged: the payload (the same bytes
    ``script_run`` sends on stdin) is written once on this machine under its sha256; the command
    checks the host's copy against that sha256 before running it. No secret in ``data``: the
    payload is a plain file here and on the host."""
    payload = script_body(name) + data
    sha = hashlib.sha256(payload.encode()).hexdigest()
    path = PAYLOADS_DIR / f"{sha}.run"
    if not path.is_file():
        PAYLOADS_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(payload)
        tmp.replace(path)
    command = " ".join(["bash", "-c", shlex.quote(RUN_STAGED), "run-staged", sha, STAGED_PATH,
                        *(shlex.quote(str(a)) for a in args)])
    return StagedRun(path, sha, command)


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
