"""`python -m cli watch` as a subprocess against a lab stack, and its JSON-lines log read back
(tests/e2e/test_watch.py and bench/failover.py drive it the same way)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from lab.hosts import REPO


class WatcherError(AssertionError):
    pass


class Watcher:
    """One `cli watch` process: its decisions in ``log_path`` (JSON lines), the engine's output
    and the progress of `up` in ``stderr_path``."""

    def __init__(self, stack: str, env: dict[str, str], workdir: Path, *args: str,
                 project_dir: Path = REPO, prefix: tuple[str, ...] = ()):
        """``project_dir``: the clone it runs from (``--project-dir``); ``prefix``: what runs it
        (e.g. ``Lab.enter_argv``: on a lab host's network)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"watch-{stack}.jsonl"
        self.stderr_path = workdir / f"watch-{stack}.stderr"
        self.log_path.unlink(missing_ok=True)
        self._stderr = open(self.stderr_path, "ab")
        self.argv = [*prefix, sys.executable, "-m", "cli", "watch", "--stack", stack,
                     "--project-dir", str(project_dir), "--log", str(self.log_path), *args]
        # Its own session: no terminal, signals only from us (as under systemd).
        self.proc = subprocess.Popen(self.argv, cwd=project_dir,
                                     env=dict(env, PYTHONPATH=str(REPO)),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, start_new_session=True)

    def events(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written
        return out

    def decisions(self, kind: str | None = None) -> list[dict]:
        return [e for e in self.events() if e["event"] == "decision"
                and (kind is None or e["decision"] == kind)]

    def wait_for(self, match: Callable[[dict], bool], timeout: float, what: str,
                 poll: float = 0.05, then: Callable[[dict], None] | None = None) -> dict:
        """The first logged event that ``match``es (``then`` runs on it at once: e.g. read a
        counter the instant it appears); WatcherError with the log's tail after ``timeout`` or
        when the watcher exits."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if match(event):
                    if then is not None:
                        then(event)
                    return event
            if self.proc.poll() is not None:
                raise WatcherError(f"the watcher exited ({self.proc.returncode}) before {what}\n"
                                   f"{self.tail()}")
            if time.monotonic() > deadline:
                raise WatcherError(f"no {what} within {timeout:.0f}s\n{self.tail()}")
            time.sleep(poll)

    def tail(self, lines: int = 40) -> str:
        log = "\n".join(self.log_path.read_text().splitlines()[-lines:]) if self.log_path.exists() else ""
        err = "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        return f"--- watch log ---\n{log}\n--- watch stderr ---\n{err}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise WatcherError(f"the watcher did not stop within {timeout:.0f}s of "
                                   f"{signal.Signals(sig).name}\n{self.tail()}") from None
        self._stderr.close()
        return self.proc.returncode


def project_clone(dest: Path, stack_file: Path) -> Path:
    """A clone of this project for a watcher of another machine: every entry of the repository
    linked, except the stack files, with its own copy of ``stack_file`` (each machine keeps its
    own, as an operator's clones do)."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        name = entry.name
        if (name.startswith((".", "Pulumi.")) and name != "Pulumi.yaml") or name == "__pycache__":
            continue
        link = dest / name
        if not link.exists():
            link.symlink_to(entry)
    shutil.copy2(stack_file, dest / stack_file.name)
    return dest


class PacketKinds:
    """Counts the TCP segments sent towards host ``ref``'s ``port`` that open no connection (no
    SYN): retransmissions of connections opened before the host was killed. A probe whose socket
    was closed with unacknowledged data (curl's --max-time) leaves the kernel retransmitting it
    for minutes; that is not traffic of the recovery, whereas any new connection (a SYN) is.
    ``breakdown`` also counts every other kind of packet towards the host, to say what a
    non-zero count was."""

    KINDS = {
        "retransmits": "tcp dport {port} tcp flags & syn == 0",
        "registry_syn": "tcp dport {port} tcp flags & syn == syn",
        "ssh": "tcp dport 22",
        "apiserver": "tcp dport 6443",
        "etcd_peers": "tcp dport {peer} counter name {{counter}} accept",   # not in packets_to
        "etcd_peers_back": "tcp sport {peer} counter name {{counter}} accept",
        "other_tcp": "tcp dport != {{ 22, 6443, {port} }}",
        "udp": "meta l4proto udp",
        "icmp": "meta l4proto icmp",
    }

    def __init__(self, lab, ref: str, port: int):
        from lab.hosts import ETCD_PEER_PORT, NFT_TABLE

        self.table = NFT_TABLE
        self.chain = "retx_" + lab.host(ref).name.replace("-", "_")
        ifname = lab.host(ref).name
        lines = [f"add chain bridge {self.table} {self.chain} {{ type filter hook postrouting "
                 "priority 5; policy accept; }"]
        for kind, match in self.KINDS.items():
            counter = f"{self.chain}_{kind}"
            rule = match.format(port=port, peer=ETCD_PEER_PORT)
            rule = rule.format(counter=counter) if "{counter}" in rule else f"{rule} counter name {counter}"
            lines.append(f"add counter bridge {self.table} {counter}")
            lines.append(f'add rule bridge {self.table} {self.chain} oifname "{ifname}" ether type '
                         f"ip {rule}")
        subprocess.run(["nft", "-f", "-"], check=True, text=True, input="\n".join(lines) + "\n")

    def _count(self, kind: str) -> int:
        out = subprocess.run(["nft", "-j", "list", "counter", "bridge", self.table,
                              f"{self.chain}_{kind}"], check=True, capture_output=True,
                             text=True).stdout
        return next(int(i["counter"]["packets"]) for i in json.loads(out)["nftables"]
                    if "counter" in i)

    def breakdown(self) -> dict[str, int]:
        return {kind: self._count(kind) for kind in self.KINDS}

    def packets(self) -> int:
        return self._count("retransmits")

    def remove(self) -> None:
        subprocess.run(["nft", "delete", "chain", "bridge", self.table, self.chain], check=False,
                       capture_output=True)
        for kind in self.KINDS:
            subprocess.run(["nft", "delete", "counter", "bridge", self.table,
                            f"{self.chain}_{kind}"], check=False, capture_output=True)
