"""Command lines that run the files under ``scripts/``.

A script travels inside its command (``bash -c '<lib/common.sh + script>' name args…``): one SSH
session per change, and the script's whole content is part of the resource's inputs, so an edited
script reruns where it is used. Secrets never go into these strings; they travel on stdin.
"""

from __future__ import annotations

import hashlib
import shlex
from functools import cache
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"


@cache
def script_body(name: str) -> str:
    common = (SCRIPTS_DIR / "lib" / "common.sh").read_text()
    return common + "\n" + (SCRIPTS_DIR / name).read_text()


def script_command(name: str, *args: str) -> str:
    """``bash -c`` command running ``scripts/<name>`` with ``args`` (each quoted)."""
    return " ".join(["bash", "-c", shlex.quote(script_body(name)), shlex.quote(name),
                     *(shlex.quote(str(a)) for a in args)])


def script_digest(name: str) -> str:
    return hashlib.sha256(script_body(name).encode()).hexdigest()[:16]
