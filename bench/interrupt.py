"""Phase `interrupt` (issue 24 item 4): a recovery at 3 + M interrupted, then finished by a rerun.

On the lab and stack a `--only large --keep` run leaves (master0 the second master since its
recovery, the first killed): the second master is killed too and `python -m cli recover master0
--host <third master> --yes --json` is started, as an operator runs it, and interrupted ROUNDS
times at a random point of an engine `up` it runs: alternately `kill -9` of the engine (the
`pulumi up` process: what an OOM kill or a lost machine does to it) and Ctrl-C (SIGINT to the
command's whole process group, as a terminal sends it). Each interrupted attempt is followed by
the next `cli recover`, which must clear what the last left (cli/change.py clear_dead_locks);
the last one runs to the end and must verify the registry and finish the fence phase. Then the
stack's state (`pulumi stack export`) must hold no pending operation, no URN twice, and a step
of every live host; and no frame from the operator's machine may have reached either dead
master0.

The point of each interruption: a uniform draw in [0.5 s, the `up`'s expected length] after
the `pulumi up` process starts (the first attempt's expected length is the recovery `up` the
large phase measured; a resumed attempt rewrites every node in one `up`, so the last resumed
attempt's observed length, else RESUMED_GUESS_S). Whether the engine was still running at that
point, and what the command printed, are recorded for each round.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procmem import TreePeak, descendants

ROUNDS = ("kill -9", "ctrl-c", "kill -9", "ctrl-c", "kill -9", "ctrl-c")
RESUMED_GUESS_S = 60.0
ATTEMPT_LIMIT_S = 1800
SEED = 24


@dataclass
class Round:
    how: str
    delay_s: float            # after the `pulumi up` process started
    hit: str                  # "engine" (the up was running), "command" (between engine runs)
    up_seen_s: float | None   # when the `pulumi up` process appeared, after the command started
    exit_code: int | None
    seconds: float            # the whole attempt
    said: str                 # the command's last lines (its own, secrets never printed there)


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


def start(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def interrupted(cmd: list[str], cwd: Path, env: dict[str, str], how: str, window_s: float,
                rng: random.Random) -> Round:
    """One attempt interrupted ``how`` at a random point of its first `up`."""
    began = time.monotonic()
    proc = start(cmd, cwd, env)
    delay = rng.uniform(0.5, max(1.0, window_s))
    up_seen = None
    while proc.poll() is None and time.monotonic() - began < ATTEMPT_LIMIT_S:
        if engine_ups(proc.pid):
            up_seen = time.monotonic()
            break
        time.sleep(0.05)
    hit = "none"
    if up_seen is not None:
        while proc.poll() is None and time.monotonic() - up_seen < delay:
            time.sleep(0.05)
        if proc.poll() is None:
            ups = engine_ups(proc.pid)
            hit = "engine" if ups else "command"
            if how == "kill -9":
                for pid in ups or [proc.pid]:
                    os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=ATTEMPT_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    said = "\n".join((err or "").strip().splitlines()[-4:])
    return Round(how, round(delay, 2), hit, None if up_seen is None else round(up_seen - began, 2),
                 proc.returncode, round(time.monotonic() - began, 2), said)


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


def measure(cli: list[str], cwd: Path, env: dict[str, str], first_window_s: float,
            log) -> tuple[list[Round], dict]:
    """The interrupted attempts then the rerun to the end; the rounds and the last run's JSON
    (its exit code under "exit_code", as the command reports it)."""
    rng = random.Random(SEED)
    rounds: list[Round] = []
    for how in ROUNDS:
        # The first attempt runs the recovery in two phases; a resumed one rewrites every node in
        # one `up` (master0 is already the new one).
        window = first_window_s if not rounds else RESUMED_GUESS_S
        rnd = interrupted(cli, cwd, env, how, window, rng)
        rounds.append(rnd)
        log(f"interrupt {len(rounds)}/{len(ROUNDS)} ({how} {rnd.delay_s:.1f}s after `up` started, "
            f"hit {rnd.hit}): exit {rnd.exit_code} after {rnd.seconds:.1f}s")
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
