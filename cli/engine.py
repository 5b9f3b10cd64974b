"""The CLI's plumbing to the Pulumi engine (Automation API over the project directory).

The engine's environment is the operator's: `pulumi` on PATH (or `--pulumi`), the backend from
PULUMI_BACKEND_URL or `pulumi login`, the passphrase from PULUMI_CONFIG_PASSPHRASE(_FILE). Nothing
here invents them. Secret values are handed to `pulumi config set` on stdin, never as arguments.
Which stack a command works on without `--stack` is the engine's answer too (`selected_stack`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from cli.common import EXIT_DEGRADED, CliError
from config import PROJECT, stack_file_path
from topology import FENCE_LATER_ENV, HostStep
# Types whose steps say nothing to an operator (components, the stack, providers).
_QUIET_TYPES = ("pulumi:pulumi:Stack", "pulumi:providers:", "sealer:")
_NO_CHANGE = ("same", "read", "refresh")
# The engine saves the state once, when the run ends (also when it fails or is cancelled), and
# not when each step starts and ends: each save writes the whole state (JSON, a hash, a backup
# copy), so a run of S steps over a state of R resources costs O(S x R) (docs/figures.md).
SKIP_CHECKPOINTS_ENV = "PULUMI_SKIP_CHECKPOINTS"


def use_pulumi(explicit: str | None) -> str:
    """Puts `--pulumi PATH`'s directory first on PATH; returns the `pulumi` that will run."""
    if explicit:
        binary = Path(explicit).expanduser().resolve()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise CliError(f"--pulumi {explicit}: not an executable file")
        os.environ["PATH"] = os.pathsep.join([str(binary.parent), os.environ.get("PATH", "")])
    found = shutil.which("pulumi")
    if not found:
        raise CliError("`pulumi` is not on PATH: install the Pulumi CLI or pass --pulumi PATH")
    return found


def selected_stack(project_dir: str | os.PathLike, pulumi: str | None = None) -> str:
    """The stack `pulumi` works on when no `--stack` is given: the workspace's selected stack
    (`pulumi stack select`), as the engine reports it (`pulumi stack ls`, the current one)."""
    project_dir = Path(project_dir).resolve()
    if not (project_dir / "Pulumi.yaml").is_file():
        raise CliError(f"no --stack given, and {project_dir} holds no Pulumi.yaml to find the "
                       "selected stack of (check --project-dir)")
    try:
        use_pulumi(pulumi)
    except CliError as e:
        raise CliError(f"no --stack given, and no engine to ask which stack is selected "
                       f"({e.message}); or pass --stack NAME") from None
    from pulumi import automation as auto

    try:
        current = auto.LocalWorkspace(work_dir=str(project_dir)).stack()
    except Exception as e:  # CommandError (no backend, not logged in), version check
        raise CliError(f"no --stack given, and the engine cannot say which stack is selected: "
                       f"{_short(e)}") from None
    if current is None:
        raise CliError("no --stack given and no stack is selected: pass --stack NAME or select "
                       "one with `pulumi stack select NAME`")
    return current.name


def first_error_line(text: str) -> str:
    """The line of engine output an operator needs (`error: ...`), else the last non-empty line."""
    lines = [redact_urls(line.strip()) for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return lines[-1] if lines else "no output"


# scheme://user:password@ -> scheme://user:****@ : the engine quotes a backend URL in its errors
# (`unable to open state database "postgres://pulumi:<password>@..."`), and so do we.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@\"']*:)[^@\s\"']*@")


def redact_urls(text: str) -> str:
    """``text`` with the password of every `scheme://user:password@host` URL replaced by ****."""
    return _URL_PASSWORD.sub(r"\1****@", text)


def backend_for_humans() -> str:
    """Where the state lives, for a message: PULUMI_BACKEND_URL without its password."""
    return redact_urls(os.environ.get("PULUMI_BACKEND_URL") or "pulumi login")


def _short(exc: Exception) -> str:
    stderr = getattr(exc, "stderr", None)
    if stderr is None and getattr(exc, "args", None):
        stderr = str(exc.args[0])
    return first_error_line(stderr or str(exc))


def step_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


@dataclass
class Steps:
    """The steps of one preview or up by resource name (non-trivial ops only)."""

    ops: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)     # name -> first error line
    diagnostics: list[str] = field(default_factory=list)     # error diagnostics without a resource

    def record(self, name: str, type_: str, op: str) -> None:
        before = self.ops.get(name)
        if before in ("replace", "create-replacement") and op in ("delete-replaced", "create-replacement"):
            return
        # A step whose type changes (the data step: local store push <-> remote pull) is a new
        # URN: the engine creates one and deletes the other under the same name. It reads as a
        # replace, with the new step's type.
        if {before, op} == {"create", "delete"}:
            if op == "create":
                self.types[name] = type_
            self.ops[name] = "replace"
            return
        self.types[name] = type_
        self.ops[name] = op


class Progress:
    """Engine event handler: records the steps and, when ``out`` is given, prints one line as each
    step starts and as it finishes (engine events arrive on a reader thread)."""

    def __init__(self, out: TextIO | None = None):
        self.steps = Steps()
        self.out = out
        self.start = time.monotonic()
        self._began: dict[str, float] = {}
        self._lock = threading.Lock()

    def _say(self, mark: str, op: str, name: str, extra: str = "") -> None:
        if self.out is None:
            return
        elapsed = time.monotonic() - self.start
        with self._lock:
            print(f"  [{elapsed:6.1f}s] {mark:<6} {op:<8} {name}{extra}", file=self.out, flush=True)

    def __call__(self, event) -> None:
        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            op = getattr(meta.op, "value", str(meta.op))
            name = step_name(meta.urn)
            if op in _NO_CHANGE or meta.type.startswith(_QUIET_TYPES):
                return
            self.steps.record(name, meta.type, op)
            self._began[meta.urn + op] = time.monotonic()
            self._say("start", op, name)
        elif event.res_outputs_event is not None:
            meta = event.res_outputs_event.metadata
            op = getattr(meta.op, "value", str(meta.op))
            if op in _NO_CHANGE or meta.type.startswith(_QUIET_TYPES):
                return
            began = self._began.get(meta.urn + op)
            took = f" ({time.monotonic() - began:.1f}s)" if began is not None else ""
            self._say("done", op, step_name(meta.urn), took)
        elif event.res_op_failed_event is not None:
            meta = event.res_op_failed_event.metadata
            op = getattr(meta.op, "value", str(meta.op))
            name = step_name(meta.urn)
            self.steps.failed.setdefault(name, "")
            self._say("FAILED", op, name)
        elif event.diagnostic_event is not None:
            diag = event.diagnostic_event
            if diag.severity != "error":
                return
            message = first_error_line(diag.message)
            if diag.urn:
                name = step_name(diag.urn)
                if not self.steps.failed.get(name):
                    self.steps.failed[name] = message
            else:
                self.steps.diagnostics.append(message)


class Engine:
    """One stack of the project in ``project_dir``, selected through the Automation API."""

    def __init__(self, stack: str, project_dir: str | os.PathLike, pulumi: str | None = None,
                 *, create: bool = False, select: bool = True):
        """``create``: make the stack in the backend when it does not exist (with the engine's
        default secrets provider); ``created`` then says so. ``select`` False: only `cli` (and
        what uses it: get_value) works, and the workspace's selected stack stays as it was
        (`status --all` reads many stacks' secrets side by side)."""
        self.stack_name = stack
        self.project_dir = Path(project_dir).resolve()
        self.pulumi = use_pulumi(pulumi)
        self.created = False
        # Each line the engine itself prints during `up` (`cli watch` logs them); None: dropped.
        self.output: Callable[[str], None] | None = None
        # The message `up` records in the stack's history (None: the engine's default).
        self.message: str | None = None
        if not (self.project_dir / "Pulumi.yaml").is_file():
            raise CliError(f"{self.project_dir} holds no Pulumi.yaml (check --project-dir)")
        from pulumi import automation as auto

        self._auto = auto
        if not select:
            self.stack = None
            return
        try:
            try:
                self.stack = auto.select_stack(stack_name=stack, work_dir=str(self.project_dir))
            except auto.StackNotFoundError:
                if not create:
                    raise
                self.stack = auto.create_stack(stack_name=stack, work_dir=str(self.project_dir))
                self.created = True
        except auto.StackNotFoundError:
            raise CliError(f"stack {stack!r} does not exist in the backend "
                           f"({backend_for_humans()}): "
                           "create it with `pulumi stack init`") from None
        except Exception as e:  # CommandError, version check, missing CLI
            raise CliError(f"cannot select stack {stack!r}: {_short(e)}") from None

    @property
    def stack_file(self) -> Path:
        return stack_file_path(self.stack_name, self.project_dir)

    # -- config ---------------------------------------------------------------------------------
    def cli(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        """`pulumi --non-interactive ARGS --stack NAME` in the project dir; CliError on failure."""
        argv = [self.pulumi, "--non-interactive", *args, "--stack", self.stack_name]
        env = dict(os.environ, PULUMI_SKIP_UPDATE_CHECK="true")
        try:
            done = subprocess.run(argv, cwd=self.project_dir, input=input, capture_output=True,
                                  text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise CliError(f"pulumi {args[0]} {args[1] if len(args) > 1 else ''} timed out after {timeout:.0f}s") from None
        if done.returncode != 0:
            raise CliError(f"pulumi {' '.join(a for a in args if not a.startswith('-'))}: "
                           f"{first_error_line(done.stderr or done.stdout)}")
        return done.stdout

    def set_value(self, path: str, value: str, *, secret: bool = False) -> None:
        """`pulumi config set --path --raw [--secret] PATH` with the value on stdin (not in argv;
        --raw keeps a PEM's final newline)."""
        self.cli("config", "set", "--path", "--raw", "--secret" if secret else "--plaintext",
                 f"{PROJECT}:{path}", input=value)

    def get_value(self, path: str) -> str:
        return self.cli("config", "get", "--path", f"{PROJECT}:{path}").rstrip("\n")

    def set_master0(self, ip: str, down_hosts: list[str], had_down_hosts: bool) -> None:
        """master0 and the whole down_hosts list, through the engine."""
        self.stack.set_config(f"{PROJECT}:master0", self._auto.ConfigValue(ip))
        self.set_down_hosts(down_hosts, had_down_hosts)

    def set_down_hosts(self, down_hosts: list[str], had_down_hosts: bool) -> None:
        try:
            if had_down_hosts:
                self.stack.remove_config(f"{PROJECT}:down_hosts")
            if down_hosts:
                self.stack.set_all_config(
                    {f"{PROJECT}:down_hosts[{i}]": self._auto.ConfigValue(ip)
                     for i, ip in enumerate(down_hosts)}, path=True)
        except Exception as e:
            raise CliError(f"cannot set down_hosts: {_short(e)}") from None

    # -- runs -----------------------------------------------------------------------------------
    def preview(self, defer: frozenset[str] = frozenset()) -> tuple[Steps, float]:
        """`pulumi preview`; ``defer``: as in ``up``."""
        progress = Progress()
        start = time.monotonic()
        try:
            with self._deferring(defer) as exclude:
                self.stack.preview(on_event=progress, color="never", exclude=exclude)
        except Exception as e:
            raise CliError(f"pulumi preview failed: {_failure(progress.steps, e)}", EXIT_DEGRADED) from None
        return progress.steps, time.monotonic() - start

    def up(self, out: TextIO = sys.stdout, defer: frozenset[str] = frozenset(),
           checkpoints: bool = True) -> tuple[Steps, float]:
        """`pulumi up` with one line per step; CliError (exit 1) naming the failed step.
        ``defer``: hosts whose node-side steps stay as they are in the state, for a recovery's
        fence phase (cli/change.py): the program does not declare them (FENCE_LATER_ENV) and
        `--exclude` names their URNs, so the engine neither runs nor drops them; the program's
        and the engine's time then does not grow with those hosts. ``checkpoints=False``: the
        engine saves the state once, at the end (SKIP_CHECKPOINTS_ENV), not when each step
        starts and ends; for the CLI's changes only (cli/change.py says why that is safe)."""
        progress = Progress(out)
        start = time.monotonic()
        shown = self.output
        on_output = (lambda line: shown(redact_urls(line))) if shown else None
        try:
            with self._deferring(defer) as exclude, self._env(
                    {} if checkpoints else {SKIP_CHECKPOINTS_ENV: "true"}):
                self.stack.up(on_event=progress, on_output=on_output, color="never",
                              message=self.message, exclude=exclude)
        except Exception as e:
            raise UpFailed(progress.steps, _failure(progress.steps, e)) from None
        return progress.steps, time.monotonic() - start

    @contextlib.contextmanager
    def _env(self, values: dict[str, str]):
        """``values`` in the engine's environment for one run (the workspace's env_vars)."""
        env = self.stack.workspace.env_vars
        before = {k: env[k] for k in values if k in env}
        env.update(values)
        try:
            yield
        finally:
            for k in values:
                env.pop(k, None)
            env.update(before)

    @contextlib.contextmanager
    def _deferring(self, defer: frozenset[str]):
        """FENCE_LATER_ENV in the program's environment for one run; yields the URNs to
        exclude (None when nothing is deferred)."""
        if not defer:
            yield None
            return
        with self._env({FENCE_LATER_ENV: ",".join(sorted(defer))}):
            yield [step.urn(self.stack_name, PROJECT, ip) for ip in sorted(defer)
                   for step in HostStep.node_side()]

    def outputs(self, *keys: str) -> dict:
        """The stack's outputs named ``keys`` (Automation API `stack output`), as plain values; a
        key the stack does not export is absent (an older stack). CliError when the engine cannot
        say."""
        try:
            found = self.stack.outputs()
        except Exception as e:  # noqa: BLE001  (CommandError, no state yet)
            raise CliError(f"cannot read stack {self.stack_name!r}'s outputs: {_short(e)}") from None
        return {k: found[k].value for k in keys if k in found}

    def export(self) -> dict:
        return self.stack.export_stack().deployment

    def drop_pending_operations(self) -> list[str]:
        """Takes the pending operations a killed engine left out of the state (`stack export`,
        without them, `stack import`: the engine takes the stack lock for the import, so no run
        may hold it); returns them as "name (type)". The steps they name run again at the next
        `up` (every step of this program is idempotent)."""
        from cli.stacklock import Pending, without_pending

        try:
            exported = self.stack.export_stack()
            pending = Pending.of(dict(exported.deployment or {}))
            if pending.operations:
                self.stack.import_stack(self._auto.Deployment(
                    version=exported.version, deployment=without_pending(dict(exported.deployment))))
        except Exception as e:  # noqa: BLE001  (CommandError: locked, no state)
            raise CliError(f"cannot clear the pending operations of stack "
                           f"{self.stack_name!r}: {_short(e)}") from None
        return pending.describe()

    def backend_url(self) -> str | None:
        """The backend this stack lives in (PULUMI_BACKEND_URL, else `pulumi whoami`'s)."""
        if os.environ.get("PULUMI_BACKEND_URL"):
            return os.environ["PULUMI_BACKEND_URL"]
        try:
            return self.stack.workspace.who_am_i().url
        except Exception:  # noqa: BLE001
            return None

    def remove_stack(self) -> None:
        """`pulumi stack rm --yes` (only for a stack this command created and left empty)."""
        self.cli("stack", "rm", "--yes")


class UpFailed(CliError):
    def __init__(self, steps: Steps, message: str):
        super().__init__(message, EXIT_DEGRADED)
        self.steps = steps


# The Automation API's CommandError says the engine's exit code in its text (" code: -9").
_EXIT_CODE = re.compile(r"^\s*code: (-?\d+)\s*$", re.M)


def _failure(steps: Steps, exc: Exception) -> str:
    if steps.failed:
        name, why = next(iter(steps.failed.items()))
        return f"step {name} failed: {why or _short(exc)}"
    code = _EXIT_CODE.search(str(exc.args[0]) if getattr(exc, "args", None) else "")
    if code is not None and int(code.group(1)) < 0:
        # Killed (an OOM kill, `kill -9`, a lost session): its last line would be any warning.
        return f"the engine (`pulumi`) was killed by signal {-int(code.group(1))}"
    if steps.diagnostics:
        return steps.diagnostics[0]
    return _short(exc)
