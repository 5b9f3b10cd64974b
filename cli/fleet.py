"""`status --all`: every stack of the project, one row per stack's cluster.

Which stacks: the engine's own listing (`pulumi stack ls --json` in the project directory, so
it is whatever backend PULUMI_BACKEND_URL or `pulumi login` names: file://, postgres://, s3://,
the Pulumi Cloud), joined with the project's `Pulumi.<stack>.yaml` files (a stack file the
backend lacks is still probed: its config is read offline, as `status --stack` does). The listing
gives each stack's last update and, when the backend reports it, whether an update runs now.

Each stack is checked as `status --stack NAME` checks it (``cli.health.check_cluster``), all
stacks at once, with one bound over every SSH session they open together (a semaphore held
around each `ssh` run). A stack that fails (its config does not validate, no key, the engine
cannot decrypt a secret, any error) becomes an error row and the others go on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cli.common import EXIT_DEGRADED, EXIT_OK, CliError
from cli.engine import first_error_line, use_pulumi
from cli.health import Assessment, check_cluster, health_json
from cli.session import Session

DEFAULT_SESSIONS = 16
LIST_TIMEOUT_S = 120


@dataclass
class StackEntry:
    """One stack to check: its name and what the backend's listing says of it (None: the backend
    does not list it, or does not report it)."""

    name: str
    in_backend: bool = True
    last_update: str | None = None          # RFC 3339, as the listing gives it
    update_in_progress: bool | None = None  # None: the listing does not say
    resource_count: int | None = None


def parse_listing(text: str) -> list[StackEntry]:
    """`pulumi stack ls --json`'s array ([{name, current, lastUpdate, updateInProgress,
    resourceCount, url}], the last four only when known)."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CliError(f"`pulumi stack ls --json` printed no JSON ({e})") from None
    if not isinstance(doc, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                            for s in doc):
        raise CliError("`pulumi stack ls --json` printed something other than a list of stacks")
    return [StackEntry(
        name=s["name"],
        last_update=s.get("lastUpdate") if isinstance(s.get("lastUpdate"), str) else None,
        update_in_progress=(s["updateInProgress"] if isinstance(s.get("updateInProgress"), bool)
                            else None),
        resource_count=s.get("resourceCount") if isinstance(s.get("resourceCount"), int) else None,
    ) for s in doc]


def list_backend_stacks(project_dir: Path, pulumi: str | None) -> list[StackEntry]:
    """The project's stacks as the engine lists them; CliError (exit 2) when it cannot."""
    if not (project_dir / "Pulumi.yaml").is_file():
        raise CliError(f"{project_dir} holds no Pulumi.yaml (check --project-dir)")
    binary = use_pulumi(pulumi)
    env = dict(os.environ, PULUMI_SKIP_UPDATE_CHECK="true")
    try:
        done = subprocess.run([binary, "--non-interactive", "stack", "ls", "--json"],
                              cwd=project_dir, capture_output=True, text=True,
                              timeout=LIST_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CliError(f"`pulumi stack ls` timed out after {LIST_TIMEOUT_S}s") from None
    if done.returncode != 0:
        raise CliError("cannot list the stacks of the backend "
                       f"({os.environ.get('PULUMI_BACKEND_URL') or 'pulumi login'}): "
                       f"{first_error_line(done.stderr or done.stdout)}")
    return parse_listing(done.stdout)


def stack_file_names(project_dir: Path) -> list[str]:
    """The stacks the project directory holds a `Pulumi.<stack>.yaml` for."""
    names = []
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        name = path.name[len("Pulumi."):-len(".yaml")]
        if name:
            names.append(name)
    return names


def join_stacks(listed: list[StackEntry], files: list[str]) -> list[StackEntry]:
    """The listing's stacks in its order, then each stack file the backend does not list."""
    short = {e.name.split("/")[-1] for e in listed}
    return [*listed, *(StackEntry(name, in_backend=False) for name in files if name not in short)]


@dataclass
class StackRow:
    """One stack's line: ``state`` healthy | degraded | error."""

    entry: StackEntry
    state: str
    error: str | None = None
    master0: str | None = None
    hosts_total: int | None = None
    hosts_reachable: int | None = None
    result: Assessment | None = None
    health: dict = field(default_factory=dict)   # health_json's keys (empty on an error)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.state == "healthy" else EXIT_DEGRADED

    @property
    def problems(self) -> list[str]:
        return list(self.result.problems) if self.result is not None else []

    def cells(self, now: datetime.datetime) -> tuple[str, ...]:
        r = self.result
        return (
            self.entry.name,
            self.master0 or "-",
            f"{self.hosts_reachable}/{self.hosts_total}" if self.hosts_total is not None else "-",
            self.state,
            str(len(r.problems)) if r is not None else "-",
            f"{r.master0_images}/{r.images_expected}" if r is not None else "-",
            update_age(self.entry.last_update, now) if self.entry.in_backend else "not in backend",
            {True: "yes", False: "no", None: "-"}[self.entry.update_in_progress],
        )

    def as_json(self) -> dict:
        e = self.entry
        return {
            **self.health,
            "stack": e.name, "status": self.state, "exit_code": self.exit_code,
            "error": self.error, "master0": self.master0, "hosts_total": self.hosts_total,
            "hosts_reachable": self.hosts_reachable, "in_backend": e.in_backend,
            "last_update": e.last_update, "update_in_progress": e.update_in_progress,
            "resource_count": e.resource_count, "seconds": round(self.seconds, 2),
        }


def update_age(stamp: str | None, now: datetime.datetime) -> str:
    """How long ago an RFC 3339 time was ("3m ago"); "never" without one."""
    if not stamp:
        return "never"
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def check_stack(entry: StackEntry, args: argparse.Namespace, gate) -> StackRow:
    """``status --stack`` for one stack, as a row; never raises for the stack's own failures."""
    start = time.monotonic()
    one = argparse.Namespace(stack=entry.name, project_dir=args.project_dir, pulumi=None,
                             ssh_key=getattr(args, "ssh_key", None), json=True)
    row = StackRow(entry, "error")
    try:
        with Session(one, select_engine=False, ssh_gate=gate) as session:
            config = session.config
            row.master0 = config.master0
            session.images  # a missing image store refuses before any host is dialled
            result = check_cluster(session)
            row.seconds = time.monotonic() - start
            row.result = result
            row.hosts_total = len(result.hosts)
            row.hosts_reachable = sum(1 for h in result.hosts if h.reachable)
            row.health = health_json(config, result, row.seconds)
            row.state = "healthy" if result.healthy else "degraded"
    except CliError as e:
        row.error = "\n".join(line.removeprefix("error: ") for line in e.message.splitlines())
    except Exception as e:  # noqa: BLE001  one stack's surprise must not stop the others
        row.error = f"{type(e).__name__}: {e}"
    row.seconds = time.monotonic() - start
    return row


def check_stacks(entries: list[StackEntry], args: argparse.Namespace,
                 sessions: int = DEFAULT_SESSIONS, check=check_stack) -> list[StackRow]:
    """Every stack at once, rows in ``entries``' order; no more than ``sessions`` SSH sessions
    run at any moment over all of them."""
    if not entries:
        return []
    gate = threading.BoundedSemaphore(sessions)
    with ThreadPoolExecutor(max_workers=min(len(entries), sessions)) as pool:
        futures = [pool.submit(check, entry, args, gate) for entry in entries]
        return [f.result() for f in futures]


HEAD = ("STACK", "MASTER0", "HOSTS", "STATUS", "PROBLEMS", "IMAGES", "LAST UPDATE", "UPDATING")


def render_table(rows: list[StackRow], now: datetime.datetime) -> str:
    body = [row.cells(now) for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(HEAD, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in (HEAD, *body))


def summary_line(rows: list[StackRow], seconds: float) -> str:
    counts = {state: sum(1 for r in rows if r.state == state)
              for state in ("healthy", "degraded", "error")}
    head = "healthy" if counts["healthy"] == len(rows) else "degraded"
    return (f"{head}: {len(rows)} stacks: {counts['healthy']} healthy, {counts['degraded']} "
            f"degraded, {counts['error']} error ({seconds:.1f}s)")


def report_lines(rows: list[StackRow], seconds: float, now: datetime.datetime) -> list[str]:
    """The table, then each error row's error and each degraded row's problems, each line naming
    its stack, then the summary."""
    lines = render_table(rows, now).splitlines()
    for row in rows:
        if row.error is not None:
            lines += [f"error: {row.entry.name}: {line}" for line in row.error.splitlines()]
        lines += [f"problem: {row.entry.name}: {p}" for p in row.problems]
    lines.append(summary_line(rows, seconds))
    return lines


def fleet_json(rows: list[StackRow], seconds: float) -> dict:
    """The `status --all --json` keys besides command/stack/exit_code/error."""
    return {"all": True, "healthy": all(r.state == "healthy" for r in rows),
            "stacks": [r.as_json() for r in rows], "seconds": round(seconds, 2)}
