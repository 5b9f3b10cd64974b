"""Phase `interrupt` (issue 24 item 4): a recovery at 3 + M interrupted, then finished by a rerun.

On the lab and stack a `--only large --keep` run leaves (master0 the second master since its
recovery, the first killed): the first comes back (fenced; with two of three masters down etcd
would have no quorum and the records no apiserver), the second is killed and `python -m cli recover master0
--host <third master> --yes --json` is started, as an operator runs it, and interrupted ROUNDS
times at a random point of an engine `up` it runs: alternately `kill -9` of the engine (the
`pulumi up` process: what an OOM kill or a lost machine does to it) and Ctrl-C (SIGINT to the
command's whole process group, as a terminal sends it). Each interrupted attempt is followed by
the next `cli recover`, which must clear what the last left (cli/change.py clear_dead_locks);
the last one runs to the end and must verify the registry and finish the fence phase. Then the
stack's state (`pulumi stack export`) must hold no pending operation, no URN twice, and a step
of every live host; and no frame from the operator's machine may have reached either dead
master0.

The point of each interruption: after a random number of the attempt's `up` steps have finished
(its progress lines on the command's stderr, both phases counted), uniform in [0, what the
attempt is expected to change - 1]: the recovery's first phase (`rto_<M>_changes` of the large
phase) plus the node steps the fence phase still has to rewrite (every node, less those earlier
attempts' fence phases finished). A resumed attempt runs in two phases too (cli/change.py
``resume_fence_plan``), so a cut lands in the first phase or in the fence phase. If the attempt
ends first, nothing is cut (recorded as "none"). Whether the engine was still running then
("engine"; "command": between its engine runs) and the command's last lines are recorded.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procmem import TreePeak, descendants

ROUNDS = ("kill -9", "ctrl-c", "kill -9", "ctrl-c", "kill -9", "ctrl-c")
ATTEMPT_LIMIT_S = 1800
SEED = 24


@dataclass
class Round:
    how: str
    after_steps: int          # the `up`'s finished steps it waited for
    delay_s: float            # after the `up` began
    hit: str                  # "engine" (the up was running), "command" (between engine runs)
    up_seen_s: float | None   # when the `pulumi up` process appeared, after the command started
    exit_code: int | None
    seconds: float            # the whole attempt
    said: str                 # the command's last lines (its own, secrets never printed there)
    fence_nodes: int = 0      # node steps its fence phase finished before the cut


def engine_ups(root: int) -> list[int]:
    """The `pulumi up` processes under ``root`` (the Automation API runs `pulumi up ...`)."""
    found = []
    for pid in descendants(root):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "pulumi":
                continue
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"up" in argv[1:3]:
            found.append(pid)
    return found


DONE_LINE = re.compile(r"^\s+\[\s*[\d.]+s\] done\s")   # cli/engine.Progress: a step finished
NODE_DONE = re.compile(r"^\s+\[\s*[\d.]+s\] done\s+\S+\s+node-")   # ... a node's step
UP_LINE = "pulumi up (stack "                                # cli/change._up: the `up` begins
FENCE_LINE = "fence phase: pulumi up"                         # cli/change.fence: the second `up`


class Attempt:
    """One `cli recover` run, its stderr read line by line as it comes (the progress of `up`:
    one line as each step starts and ends), its stdout kept whole."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str]):
        self.began = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1, start_new_session=True)
        self.lines: list[str] = []
        self.stdout = ""
        self.changed = threading.Condition()
        self._threads = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _read_out(self) -> None:
        self.stdout = self.proc.stdout.read()

    def wait_for(self, predicate, limit_s: float) -> bool:
        """Until ``predicate(lines)`` holds (True) or the command ends or the limit (False)."""
        deadline = time.monotonic() + limit_s
        with self.changed:
            while not predicate(self.lines):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    return predicate(self.lines)
                self.changed.wait(0.2)
            return True

    def finish(self) -> None:
        try:
            self.proc.wait(timeout=ATTEMPT_LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for t in self._threads:
            t.join(timeout=10)


def up_steps_done(lines: list[str]) -> int:
    """Steps the attempt's `up`s (first phase, fence phase) have finished, from its progress lines."""
    at = next((i for i, line in enumerate(lines) if line.startswith(UP_LINE)), None)
    return 0 if at is None else sum(1 for line in lines[at:] if DONE_LINE.match(line))


def fence_nodes_done(lines: list[str]) -> int:
    """Node steps the attempt's fence phase finished."""
    at = next((i for i, line in enumerate(lines) if line.startswith(FENCE_LINE)), None)
    return 0 if at is None else sum(1 for line in lines[at:] if NODE_DONE.match(line))


def interrupted(cmd: list[str], cwd: Path, env: dict[str, str], how: str, steps: int,
                rng: random.Random) -> Round:
    """One attempt interrupted ``how`` once its `up`s have finished a random number of steps in
    [0, ``steps`` - 1] (``steps``: what the attempt is expected to change); not at all if it
    ends first."""
    attempt = Attempt(cmd, cwd, env)
    k = rng.randrange(max(1, steps))
    hit = "none"
    if attempt.wait_for(lambda lines: any(line.startswith(UP_LINE) for line in lines), ATTEMPT_LIMIT_S):
        up_seen = time.monotonic()
        attempt.wait_for(lambda lines: up_steps_done(lines) >= k, ATTEMPT_LIMIT_S)
        if attempt.proc.poll() is None:
            ups = engine_ups(attempt.proc.pid)
            hit = "engine" if ups else "command"
            if how == "kill -9":
                for pid in ups or [attempt.proc.pid]:
                    os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(attempt.proc.pid, signal.SIGINT)
        delay = time.monotonic() - up_seen
    else:
        up_seen, delay = None, 0.0
    attempt.finish()
    said = "\n".join(attempt.lines[-4:])
    return Round(how, k, round(delay, 2), hit, None if up_seen is None else round(up_seen - attempt.began, 2),
                 attempt.proc.returncode, round(time.monotonic() - attempt.began, 2), said,
                 fence_nodes_done(attempt.lines))


def state_problems(exported: dict, live: list[str]) -> list[str]:
    """What a stack's state must not hold after the rerun: a pending operation, a URN twice, a
    live host without its steps."""
    deployment = exported.get("deployment") or {}
    problems = []
    pending = deployment.get("pending_operations") or []
    if pending:
        problems.append(f"{len(pending)} pending operations: "
                        f"{[p.get('resource', {}).get('urn', '?').rsplit('::', 1)[-1] for p in pending][:5]}")
    urns = [r["urn"] for r in deployment.get("resources") or []]
    twice = sorted({u for u in urns if urns.count(u) > 1}) if len(urns) != len(set(urns)) else []
    if twice:
        problems.append(f"{len(twice)} URNs twice: {[u.rsplit('::', 1)[-1] for u in twice[:5]]}")
    names = {u.rsplit("::", 1)[-1] for u in urns}
    missing = [ip for ip in live if f"node-{ip}" not in names]
    if missing:
        problems.append(f"{len(missing)} live hosts without their node step: {missing[:5]}")
    return problems


def measure(cli: list[str], cwd: Path, env: dict[str, str], first_steps: int, nodes: int,
            log) -> tuple[list[Round], dict]:
    """The interrupted attempts then the rerun to the end; the rounds and the last run's JSON
    (its exit code under "exit_code", as the command reports it). ``first_steps``: what the
    recovery's first phase changes; each attempt then rewrites the node steps (``nodes``) no
    earlier attempt's fence phase finished."""
    rng = random.Random(SEED)
    rounds: list[Round] = []
    for how in ROUNDS:
        left = max(0, nodes - sum(r.fence_nodes for r in rounds))
        rnd = interrupted(cli, cwd, env, how, first_steps + left, rng)
        rounds.append(rnd)
        when = (f"after {rnd.after_steps} steps of its `up`s ({rnd.delay_s:.1f}s; "
                f"{rnd.fence_nodes} node steps of the fence phase), hit {rnd.hit}"
                if rnd.up_seen_s is not None else "no `up` started: not interrupted")
        log(f"interrupt {len(rounds)}/{len(ROUNDS)} ({how}; {when}): exit {rnd.exit_code} after "
            f"{rnd.seconds:.1f}s")
    done = subprocess.run(cli, cwd=cwd, env=env, capture_output=True, text=True, timeout=ATTEMPT_LIMIT_S,
                          stdin=subprocess.DEVNULL)
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        doc = {"exit_code": done.returncode, "error": done.stderr[-2000:]}
    return rounds, doc


def tcp_established(root: int) -> int:
    """TCP connections in ESTABLISHED state held by ``root`` and its descendants (their socket
    inodes matched against /proc/<root>/net/tcp and tcp6: the machine's namespace)."""
    inodes = set()
    for pid in (root, *descendants(root)):
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(fd.path)
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{root}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        count += sum(1 for line in lines if line.split()[3] == "01" and line.split()[9] in inodes)
    return count


def watch_idle(stack: str, cwd: Path, env: dict[str, str], seconds: float, log_file: Path) -> dict:
    """`python -m cli watch --stack STACK --no-lease` for ``seconds`` with master0 alive: the CPU
    of its whole process tree (the SSH clients to its probers included), its peak memory, the
    most TCP connections it held at once, and how many probe rounds it logged."""
    log_file.unlink(missing_ok=True)
    with TreePeak() as peak:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "watch", "--stack", stack, "--no-lease",
                                 "--log", str(log_file)], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        began, most = time.monotonic(), 0
        while time.monotonic() - began < seconds and proc.poll() is None:
            most = max(most, tcp_established(proc.pid))
            time.sleep(1.0)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _out, err = proc.communicate()
    events: dict[str, int] = {}
    for line in log_file.read_text().splitlines() if log_file.exists() else []:
        try:
            name = json.loads(line).get("event", "?")
        except ValueError:
            continue
        events[name] = events.get(name, 0) + 1
    return {"seconds": round(time.monotonic() - began, 1), "cpu_s": round(sum(peak.cpu_by_name().values()), 1),
            "rss_mb": round(peak.mb, 1), "tcp_max": most, "events": events,
            "exit_code": proc.returncode, "stderr": "\n".join((err or "").splitlines()[-3:])}


def as_json(rounds: list[Round]) -> list[dict]:
    return [asdict(r) for r in rounds]


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run through `python -m bench --only interrupt`")
