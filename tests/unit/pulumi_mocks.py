"""Pulumi mocks that record every declared resource, for unit tests of the program's shape."""

from __future__ import annotations

import base64
import gzip
import hashlib
import shlex
from dataclasses import dataclass, field
from typing import Any

import pulumi


SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # pulumi's marker of a secret value on the wire
SIG_KEY = "4dabf18193072939515e22adb298388d"


@dataclass(frozen=True)
class FileAssetRef:
    """A declared file asset, equal to another of the same path (the engine compares their hash,
    which follows the file's content, and a staged payload's path holds its sha256)."""

    path: str


def unwrap(value: Any, path: str, secret_paths: set[str]) -> Any:
    """Plain value of ``value``; records in ``secret_paths`` where a secret was found."""
    if isinstance(value, pulumi.FileAsset):
        return FileAssetRef(value.path)
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            secret_paths.add(path)
            return unwrap(value.get("value"), path, secret_paths)
        return {k: unwrap(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    return value


@dataclass
class Declared:
    typ: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    secret_paths: set[str] = field(default_factory=set)


@dataclass
class Called:
    token: str
    args: dict[str, Any]
    secret_paths: set[str] = field(default_factory=set)


EMPTY_TREE = hashlib.sha256(b"").hexdigest()


def probed_hosts(command: str) -> list[str]:
    """The IPs a probe-trees.sh command line names (``--host IP PORT USER``)."""
    words = shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words) if w == "--host"]


def probe_stdout(command: str, trees: dict[str, list[str]] | None = None,
                 ids: dict[str, list[str]] | None = None) -> str:
    """What scripts/probe-trees.sh prints for the hosts ``command`` names: each host's tree_list
    lines from ``trees`` (none by default), no stamp, its cache ids from ``ids``."""
    out = []
    for ip in probed_hosts(command):
        lines = (trees or {}).get(ip, [])
        text = "".join(f"{line}\n" for line in lines)
        out.append(f"host {ip} tree {hashlib.sha256(text.encode()).hexdigest()} stamp - "
                   f"generation - files {len(lines)}")
        out.append(f"ids {ip} {' '.join((ids or {}).get(ip, []))}".rstrip())
        if "--lists" in shlex.split(command):
            out.append(f"list {ip} {base64.b64encode(gzip.compress(text.encode())).decode()}")
    return "\n".join(out)


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    resources: list[Declared] = field(default_factory=list)
    calls: list[Called] = field(default_factory=list)
    # ip -> tree_list lines / cache ids that the probe reports (command:local:run)
    trees: dict[str, list[str]] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        secret_paths: set[str] = set()
        inputs = unwrap(dict(args.inputs), "", secret_paths)
        self.resources.append(Declared(args.typ, args.name, inputs, args.custom, secret_paths))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        secret_paths: set[str] = set()
        plain = unwrap(dict(args.args), "", secret_paths)
        self.calls.append(Called(args.token, plain, secret_paths))
        if args.token == "command:local:run":
            return {**plain, "stdout": probe_stdout(plain["command"], self.trees, self.ids),
                    "stderr": ""}
        return {}

    def by_name(self) -> dict[str, Declared]:
        return {r.name: r for r in self.resources}

    def of_type(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.typ == typ]


@dataclass(frozen=True)
class Staged:
    """A staged run's command (components.remote_scripts.staged_run) read back: the sha256 it
    checks, the arguments the script gets, and the payload with that sha256 on this machine."""

    sha256: str
    args: list[str]
    payload: str

    @property
    def bash_s(self) -> str:
        """The command the step ran before its payload was staged: ``bash -s -- ARGS``."""
        return " ".join(["bash", "-s", "--", *(shlex.quote(a) for a in self.args)])


def staged(create: str) -> Staged:
    from components.remote_scripts import PAYLOADS_DIR, RUN_STAGED, STAGED_PATH

    words = shlex.split(create)
    assert words[:4] == ["bash", "-c", RUN_STAGED, "run-staged"], create
    assert words[5] == STAGED_PATH, create
    payload = (PAYLOADS_DIR / f"{words[4]}.run").read_text()
    assert hashlib.sha256(payload.encode()).hexdigest() == words[4]
    return Staged(words[4], words[6:], payload)
