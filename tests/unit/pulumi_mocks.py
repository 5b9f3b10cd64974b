"""Pulumi mocks that record every declared resource, for unit tests of the program's shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi


SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # pulumi's marker of a secret value on the wire
SIG_KEY = "4dabf18193072939515e22adb298388d"


def unwrap(value: Any, path: str, secret_paths: set[str]) -> Any:
    """Plain value of ``value``; records in ``secret_paths`` where a secret was found."""
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
class RecordingMocks(pulumi.runtime.Mocks):
    resources: list[Declared] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        secret_paths: set[str] = set()
        inputs = unwrap(dict(args.inputs), "", secret_paths)
        self.resources.append(Declared(args.typ, args.name, inputs, args.custom, secret_paths))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def by_name(self) -> dict[str, Declared]:
        return {r.name: r for r in self.resources}

    def of_type(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.typ == typ]
