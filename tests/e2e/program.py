"""Drive the real program (this project directory) through the Automation API against the lab.

A ``ProgramStack`` owns one stack of the project in a temporary file backend; its plain config is
written into ``Pulumi.<stack>.yaml`` and its secrets are set through the engine, exactly as an
operator would with ``pulumi config set [--secret] --path``.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

PROJECT_DIR = Path(__file__).resolve().parents[2]
PROJECT = "sealer-registry"


@dataclass
class RunReport:
    """What one preview or up did: the steps by resource name and how long it took."""

    steps: dict[str, str] = field(default_factory=dict)  # resource name -> op
    types: dict[str, str] = field(default_factory=dict)  # resource name -> type token
    seconds: float = 0.0
    summary: Any = None
    stdout: str = ""

    def changed(self) -> dict[str, str]:
        return {n: op for n, op in self.steps.items() if op not in ("same", "read")}

    def remote_commands(self) -> list[str]:
        """Remote or local commands the run executed (created, updated or replaced)."""
        return [n for n, op in self.changed().items()
                if self.types.get(n, "").startswith("command:")
                and op in ("create", "update", "replace", "create-replacement")]


def _on_event(report: RunReport):
    def handle(event: auto.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is None or pre.metadata is None:
            return
        meta = pre.metadata
        name = meta.urn.rsplit("::", 1)[-1]
        report.types[name] = meta.type
        op = meta.op.value if hasattr(meta.op, "value") else str(meta.op)
        # A replace shows as several steps; keep the most telling one.
        if report.steps.get(name) in ("replace",):
            return
        report.steps[name] = op
    return handle


class ProgramStack:
    def __init__(self, name: str, env: dict[str, str]):
        self.name = name
        self.env = env
        self.stack_file = PROJECT_DIR / f"Pulumi.{name}.yaml"
        self.stack = auto.create_or_select_stack(
            stack_name=name, work_dir=str(PROJECT_DIR),
            opts=auto.LocalWorkspaceOptions(env_vars=env))

    def configure(self, plain: dict[str, Any], secrets: dict[str, str]) -> None:
        """Replace the stack's config: plain values in the stack file, secrets through the engine."""
        doc = yaml.safe_load(self.stack_file.read_text()) or {}
        doc["config"] = {f"{PROJECT}:{k}": v for k, v in plain.items()}
        self.stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        for path, value in secrets.items():
            self.set_secret(path, value)

    def set_secret(self, path: str, value: str) -> None:
        """`pulumi config set --secret --path` with the value on stdin: the Automation API's
        set_config would put it on the command line, visible in every process list."""
        subprocess.run(["pulumi", "config", "set", "--secret", "--path", "--stack", self.name,
                        f"{PROJECT}:{path}"], input=value, cwd=PROJECT_DIR, env=self.env,
                       capture_output=True, text=True, check=True)

    def set(self, path: str, value: Any) -> None:
        """One plain value at a dotted path, as `pulumi config set --path` would; the rest of the
        object (its encrypted values included) stays as it is."""
        doc = yaml.safe_load(self.stack_file.read_text())
        top, *rest = path.split(".")
        if not rest:
            doc["config"][f"{PROJECT}:{top}"] = value
        else:
            node = doc["config"][f"{PROJECT}:{top}"]
            for part in rest[:-1]:
                node = node.setdefault(part, {})
            node[rest[-1]] = value
        self.stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def preview(self) -> RunReport:
        report = RunReport()
        start = time.monotonic()
        result = self.stack.preview(on_event=_on_event(report), color="never")
        report.seconds = time.monotonic() - start
        report.summary = result.change_summary
        report.stdout = result.stdout
        return report

    def up(self) -> RunReport:
        report = RunReport()
        start = time.monotonic()
        result = self.stack.up(on_event=_on_event(report), color="never")
        report.seconds = time.monotonic() - start
        report.summary = result.summary.resource_changes
        report.stdout = result.stdout
        return report

    def export(self) -> str:
        """`pulumi stack export` as an operator runs it: secrets encrypted. (The Automation API's
        export_stack passes --show-secrets, which is not what the state holds.)"""
        done = subprocess.run(["pulumi", "stack", "export", "--stack", self.name],
                              cwd=PROJECT_DIR, env=self.env, capture_output=True, text=True,
                              check=True)
        return done.stdout

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.stack.outputs().items()}

    def remove(self) -> None:
        try:
            self.stack.workspace.remove_stack(self.name, force=True)
        finally:
            self.stack_file.unlink(missing_ok=True)
