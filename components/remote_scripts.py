"""How the files under ``scripts/`` run on hosts: ``bash -s -- ARGS`` with the script on stdin.

The command line stays short (it is what an error message, a diff and a host's process list
show), while the script's whole text is part of the resource's inputs, so an edited script reruns
where it is used. Data a script reads (a tar of rootfs files, a CA, a password, an SSH key)
follows the script on the same stdin: bash reads a script from a pipe line by line, so the
script's last line ``main "$@"; exit`` runs ``main`` with the rest of stdin as its input and
nothing after it is ever parsed as commands. One SSH session per change; secrets only on stdin.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pulumi

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"
LAST_LINE = 'main "$@"\n'


@cache
def script_body(name: str) -> str:
    """lib/common.sh, then the script, its last line made to exit right after ``main``."""
    text = (SCRIPTS_DIR / name).read_text()
    if not text.endswith(LAST_LINE):
        raise ValueError(f"scripts/{name} must end with the line {LAST_LINE!r}")
    common = (SCRIPTS_DIR / "lib" / "common.sh").read_text()
    return (f"SCRIPT_NAME={shlex.quote(name)}\n{common}\n"
            f"{text[:-len(LAST_LINE)]}main \"$@\"; exit \"$?\"\n")


@dataclass(frozen=True)
class ScriptRun:
    command: str
    stdin: pulumi.Input[str]


def script_run(name: str, *args: str, data: pulumi.Input[str] | None = None) -> ScriptRun:
    """Runs ``scripts/<name> ARGS`` reading ``data`` on its stdin. A secret ``data`` keeps the
    whole stdin secret."""
    command = " ".join(["bash", "-s", "--", *(shlex.quote(str(a)) for a in args)])
    body = script_body(name)
    if data is None:
        return ScriptRun(command, body)
    return ScriptRun(command, pulumi.Output.from_input(data).apply(lambda d: body + d))
