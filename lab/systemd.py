"""A real systemd (Debian's 252) as PID 1 of one lab host, the way systemd-nspawn runs one in a
container, so that the systemd path of the node scripts (scripts/lib/entry.sh) runs for real.

Lab hosts have no init of their own (no PID namespace, lab/hosts.py). ``boot(lab, host)`` starts
``/lib/systemd/systemd --system --unit=lab.target`` inside the host's network, mount and UTS
namespaces plus namespaces of its own, following systemd's container interface
(https://systemd.io/CONTAINER_INTERFACE/):

- a new PID namespace (systemd is PID 1 there, ``/proc`` mounted for it), a new mount namespace
  under the host's (propagation private: nothing it mounts or unmounts reaches the host or the
  machine), its own UTS namespace (it sets the hostname from /etc/hostname) and IPC namespace;
- ``container=lab-systemd`` in its environment: systemd then skips what only a machine's init
  does (mount propagation to shared, loading kernel modules, read-only remounts at shutdown...);
- a cgroup namespace rooted at a delegated subtree of the machine's cgroup2 hierarchy,
  ``/sys/fs/cgroup/unified/lab-systemd/<host>``, mounted as its ``/sys/fs/cgroup`` (unified
  mode): it cannot see or touch a cgroup outside it;
- ``/sys``, ``/proc/sys`` and ``/proc/sysrq-trigger`` read-only, and a private ``/dev`` (tmpfs
  with null, zero, full, random, urandom, tty, its own devpts and /dev/shm; no /dev/kmsg),
  ``/dev/console`` being the host's ``/var/log/lab-systemd-console.log``;
- ``SYSTEMD_UNIT_PATH=/etc/systemd/lab-systemd:/etc/systemd/system`` and no generators: it reads
  the host's ``/etc/systemd/system`` (where the node scripts install their units) and the
  lab's few units (``lab.target``, minimal ``sysinit.target``, ``basic.target``,
  ``network.target``, ``multi-user.target``...), never Debian's ``/lib/systemd/system``; every
  unit the machine enabled (ssh, docker, containerd, haproxy...) is masked in the lab directory.
  So nothing starts but ``lab.target``, which wants Debian's journald (its units linked from
  /lib: ``journalctl -u`` works; journal in the host's /run/log/journal), and what a test starts;
  a unit with default dependencies pulls only the lab's empty ``sysinit.target`` (no sysctl, no
  tmpfiles, no remount-fs). systemd's own messages go to the journal too.

Its ``/run`` is the host's tmpfs (``/run/systemd/private`` is there), its ``/etc`` the host's
overlay. ``run(lab, host, cmd)`` runs a command inside its namespaces and cgroup subtree (PID
namespace included, so ``/proc/1/comm`` is ``systemd`` as on a real node and ``systemctl`` talks
to it). From the host's own namespaces (``Lab.run``, the lab's sshd) it cannot: systemd drops a
private-socket client whose credentials it cannot read from another PID namespace (``systemctl``:
``Transport endpoint is not connected``), and ``/proc/1`` there is the machine's init. ``halt`` stops
every service unit with ``systemctl stop`` (bounded), then SIGKILLs PID 1, which ends the PID
namespace; systemd-shutdown is not used (it unmounts and detaches devices, which a lab has no
business doing even in a namespace of its own). Then the cgroup subtree, the lab units and
``/run/systemd`` go. Every wait is bounded.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from lab.hosts import HOST_PATH, LabError

UNIT_DIR = "/etc/systemd/lab-systemd"
CONSOLE_LOG = "/var/log/lab-systemd-console.log"
LOG = "lab-systemd.log"  # in the host's /var/log: systemd's and its services' stdout and stderr
CGROUP_ROOT = Path("/sys/fs/cgroup/unified")
CGROUP_PARENT = "lab-systemd"
CONTAINER = "lab-systemd"
PID_FILE = "systemd.pid"  # <hostdir>/systemd.pid: PID 1 of the host's systemd, as the machine sees it
SYSTEMD = "/lib/systemd/systemd"
_LAUNCHED: dict[str, subprocess.Popen] = {}  # host name -> its unshare, reaped by _kill

TARGETS = {
    "lab.target": "Lab: only what a test starts",
    "sysinit.target": "System Initialization (lab: empty)",
    "basic.target": "Basic System (lab: empty)",
    "network.target": "Network (lab: the host's netns is up)",
    "network-online.target": "Network is Online (lab)",
    "multi-user.target": "Multi-User System (lab: never started)",
    "shutdown.target": "Shutdown (lab)",
    "sockets.target": "Sockets (lab: empty)",
    "timers.target": "Timers (lab: empty)",
    "paths.target": "Paths (lab: empty)",
    "slices.target": "Slices (lab: empty)",
    "local-fs.target": "Local File Systems (lab: empty)",
}

JOURNALD = ("systemd-journald.service", "systemd-journald.socket",
            "systemd-journald-dev-log.socket")

# PID 1 of the new PID namespace (bash), in the new mount namespace: the container's mounts, then
# exec systemd. $1: the host's name.
INIT_SCRIPT = r"""
set -eu
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mount -o remount,bind,ro /sys
for p in /proc/sys /proc/sysrq-trigger; do
  [ -e "$p" ] || continue
  mount --bind "$p" "$p"
  mount -o remount,bind,ro "$p"
done
d=$(mktemp -d /tmp/.lab-systemd-dev.XXXXXX)
mount -t tmpfs -o mode=0755,size=1m,nosuid,noexec lab-systemd-dev "$d"
for n in null zero full random urandom tty; do
  : >"$d/$n"
  mount --bind "/dev/$n" "$d/$n"
done
: >"$CONSOLE_LOG"
: >"$d/console"
mount --bind "$CONSOLE_LOG" "$d/console"
mkdir -m 0755 "$d/pts"
mkdir -m 1777 "$d/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec lab-systemd-pts "$d/pts"
mount -t tmpfs -o mode=1777,size=16m,nosuid,nodev lab-systemd-shm "$d/shm"
ln -s pts/ptmx "$d/ptmx"
ln -s /proc/self/fd "$d/fd"
ln -s /proc/self/fd/0 "$d/stdin"
ln -s /proc/self/fd/1 "$d/stdout"
ln -s /proc/self/fd/2 "$d/stderr"
mount --move "$d" /dev
rmdir "$d"
exec env -i container="$CONTAINER" PATH="$HOST_PATH" LANG=C.UTF-8 \
  SYSTEMD_UNIT_PATH="$UNIT_DIR:/etc/systemd/system" \
  SYSTEMD_GENERATOR_PATH="$UNIT_DIR/no-generators" \
  SYSTEMD_ENVIRONMENT_GENERATOR_PATH="$UNIT_DIR/no-generators" \
  "$SYSTEMD" --system --unit=lab.target --log-level=info --show-status=no
"""


def _unit(description: str) -> str:
    return f"[Unit]\nDescription={description}\nDefaultDependencies=no\n"


def _write_units(lab, host: str) -> list[str]:
    """The lab's units in the host's /etc overlay; masks for every unit the machine's
    /etc/systemd/system enables or aliases. Returns the masked names."""
    d = lab.host_path(host, UNIT_DIR)
    d.mkdir(parents=True, exist_ok=True)
    for name, description in TARGETS.items():
        text = _unit(description)
        if name == "lab.target":
            text += "Wants=systemd-journald.service\nAfter=systemd-journald.service\n"
        (d / name).write_text(text)
    for name in JOURNALD:  # Debian's own units: the services' output in `journalctl -u`
        link = d / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f"/lib/systemd/system/{name}")
    (d / "system.slice").write_text("[Unit]\nDescription=System Slice (lab)\n"
                                    "DefaultDependencies=no\n")
    etc = lab.host_path(host, "/etc/systemd/system")
    names = set()
    for p in etc.rglob("*"):
        if p.is_symlink() and "." in p.name and not p.name.startswith("sealer-"):
            names.add(p.name)
    names.add("systemd-journald-audit.socket")  # audit is the machine's (init netns only)
    for name in sorted(names):
        m = d / name
        if m.is_symlink() or m.exists():
            m.unlink()
        m.symlink_to("/dev/null")
    return sorted(names)


def _hostdir(lab, host: str) -> Path:
    return lab.hosts_dir / lab.host(host).name


def init_pid(lab, host: str) -> int | None:
    """PID 1 of the host's systemd as the machine sees it, or None when it does not run."""
    try:
        pid = int((_hostdir(lab, host) / PID_FILE).read_text())
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    return pid if exe.endswith("/systemd") else None


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cgroup(lab, host: str) -> Path:
    return CGROUP_ROOT / CGROUP_PARENT / lab.host(host).name


def run(lab, host: str, cmd: str, input: str | bytes | None = None, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """``bash -c cmd`` inside the host's systemd's namespaces (PID, mount, net, UTS, IPC, cgroup),
    clean environment: what a shell on a systemd node sees."""
    pid = init_pid(lab, host)
    if pid is None:
        raise LabError(f"{host}: no systemd runs (lab.systemd.boot first)")
    # Into the delegated subtree's root first (where systemd's parent, unshare, lives), as
    # `machinectl shell` would: its processes stay out of the machine's root cgroup.
    argv = ["sh", "-c", f'echo $$ > {_cgroup(lab, host)}/cgroup.procs && exec "$@"', "lab-run",
            "nsenter", "-t", str(pid), "-p", "-m", "-n", "-u", "-i", "-C", "--", "env", "-i",
            f"PATH={HOST_PATH}", "HOME=/root", "LANG=C.UTF-8", "bash", "-c", cmd]
    text = isinstance(input, str) or input is None
    p = subprocess.run(argv, input=input, capture_output=True, text=text, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{host} (systemd): `{cmd}` -> exit {p.returncode}: {p.stderr!s}")
    return p


def log_tail(lab, host: str, lines: int = 40) -> str:
    out = []
    for name in (LOG, Path(CONSOLE_LOG).name):
        try:
            text = lab.host_path(host, f"/var/log/{name}").read_text(errors="replace")
        except OSError:
            continue
        out.append(f"--- {name}\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(out)


def boot(lab, host: str, timeout: float = 30) -> int:
    """Start the host's systemd (idempotent) and wait until lab.target is active. Returns PID 1 as
    the machine sees it. On failure everything it started is taken down again."""
    pid = init_pid(lab, host)
    if pid is not None:
        return pid
    h = lab.host(host)
    if not (CGROUP_ROOT / "cgroup.procs").exists():
        raise LabError(f"no cgroup2 hierarchy at {CGROUP_ROOT}: the lab's systemd needs one")
    _write_units(lab, host)
    cg = _cgroup(lab, host)
    cg.mkdir(parents=True, exist_ok=True)
    holder = lab.holder_pid(h.name)
    env = {"PATH": HOST_PATH, "CONSOLE_LOG": CONSOLE_LOG, "CONTAINER": CONTAINER,
           "HOST_PATH": HOST_PATH, "UNIT_DIR": UNIT_DIR, "SYSTEMD": SYSTEMD}
    # The launcher moves itself into the delegated subtree first: the cgroup namespace that
    # unshare makes is rooted where its caller is.
    launcher = (f'echo $$ > {cg}/cgroup.procs && exec nsenter -t {holder} -n -m -u -- '
                f'unshare --pid --fork --mount-proc --mount --uts --ipc --cgroup '
                f'--propagation private -- bash -c "$INIT_SCRIPT" lab-systemd-init')
    log = open(lab.service_log(h.name, LOG.removesuffix(".log")), "ab")
    try:
        proc = subprocess.Popen(["sh", "-c", launcher], env={**env, "INIT_SCRIPT": INIT_SCRIPT},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd="/")
    finally:
        log.close()
    _LAUNCHED[h.name] = proc
    began = time.monotonic()
    init = None
    try:
        while time.monotonic() - began < timeout:
            if proc.poll() is not None:
                raise LabError(f"{h.name}: systemd exited ({proc.returncode}):\n{log_tail(lab, host)}")
            kids = _children(proc.pid)
            if kids:
                try:
                    if os.readlink(f"/proc/{kids[0]}/exe").endswith("/systemd"):
                        init = kids[0]
                        (_hostdir(lab, host) / PID_FILE).write_text(f"{init}\n")
                        (_hostdir(lab, host) / "systemd-unshare.pid").write_text(f"{proc.pid}\n")
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        if init is None:
            raise LabError(f"{h.name}: systemd did not start within {timeout}s:\n{log_tail(lab, host)}")
        while time.monotonic() - began < timeout:
            p = run(lab, host, "systemctl is-active lab.target", check=False, timeout=10)
            if p.stdout.strip() == "active":
                return init
            time.sleep(0.2)
        raise LabError(f"{h.name}: lab.target not active within {timeout}s:\n{log_tail(lab, host)}")
    except BaseException:
        _kill(lab, host, proc.pid, init)
        raise


def _kill(lab, host: str, unshare_pid: int | None, init: int | None, timeout: float = 10) -> None:
    """SIGKILL PID 1 of the namespace (the kernel then kills every process in it), wait for it and
    for unshare, remove the cgroup subtree, the lab units, the pid files and /run/systemd."""
    # unshare (the parent of PID 1) reaps it and exits; it is killed only when PID 1 is gone.
    for pid in (init,) if init else (unshare_pid,):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    cg = _cgroup(lab, host)
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if _LAUNCHED.get(lab.host(host).name) is not None:
            _LAUNCHED[lab.host(host).name].poll()
        alive = [p for p in (init, unshare_pid) if p and _alive(p)]
        procs = _cgroup_procs(cg)
        if not alive and not procs:
            break
        time.sleep(0.05)
    else:
        raise LabError(f"{host}: systemd's processes still alive after {timeout}s: "
                       f"{_cgroup_procs(cg)}")
    proc = _LAUNCHED.pop(lab.host(host).name, None)
    if proc is not None:
        proc.wait(timeout)
    if cg.exists():
        for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            d.rmdir()
        cg.rmdir()
    try:
        (CGROUP_ROOT / CGROUP_PARENT).rmdir()
    except OSError:
        pass  # another host's systemd still lives there
    hdir = _hostdir(lab, host)
    for f in (PID_FILE, "systemd-unshare.pid"):
        (hdir / f).unlink(missing_ok=True)
    lab.run(host, f"rm -rf {UNIT_DIR} /run/systemd", check=False)


def _cgroup_procs(cg: Path) -> list[int]:
    out = []
    if cg.exists():
        for f in cg.rglob("cgroup.procs"):
            try:
                out += [int(x) for x in f.read_text().split()]
            except OSError:
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def halt(lab, host: str, timeout: float = 20) -> bool:
    """Stop the host's systemd: every service unit stopped (bounded by ``timeout``), then PID 1
    killed, which ends its PID namespace; the cgroup subtree and the lab units removed. True if it
    was running. Safe to call when it is not (cleans leftovers)."""
    init = init_pid(lab, host)
    try:
        unshare_pid = int((_hostdir(lab, host) / "systemd-unshare.pid").read_text())
    except (OSError, ValueError):
        unshare_pid = None
    if init is not None:
        run(lab, host, f"timeout {int(timeout)} systemctl stop '*.service'", check=False,
            timeout=timeout + 5)
    _kill(lab, host, unshare_pid, init)
    return init is not None
