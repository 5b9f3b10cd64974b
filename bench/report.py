"""The machine, the targets of issue 7 and the printed table."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))

    def version(*argv: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return "missing"
        return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr) else ""

    return {"nproc": os.cpu_count(), "memory_gib": round(mem_kib / (1 << 20), 1), "cpu": cpu,
            "kernel": platform.release(), "openssh": version("ssh", "-V"),
            "rsync": version("rsync", "--version")}


def plugins(path: str) -> dict:
    """Which language host and command provider the engine will find on ``path``: the lab's
    stand-ins (lab/plugins/, what CI can build) or real ones (``$SEALER_PLUGINS_DIR``)."""
    import shutil

    found = {}
    for name in ("pulumi-language-python", "pulumi-resource-command"):
        where = shutil.which(name, path=path)
        kind = "missing" if where is None else (
            "lab stand-in" if Path(where).resolve().parent.name == "plugins"
            and Path(where).resolve().parent.parent.name == "lab" else "real")
        found[name] = {"path": where, "kind": kind}
    return found


def _get(r: dict, key: str):
    value = r.get(key)
    return value if isinstance(value, (int, float)) else None


def _ratio(r: dict, num: str, den: str):
    a, b = _get(r, num), _get(r, den)
    return None if a is None or not b else a / b


# key, target text, check -> True/False/None (None: not measured or no target)
TARGETS = [
    ("rto_s", "<= 15 s", lambda r: _get(r, "rto_s") is not None and r["rto_s"] <= 15),
    ("rto_50_s", "<= 1.5 x rto_s",
     lambda r: None if _ratio(r, "rto_50_s", "rto_s") is None else _ratio(r, "rto_50_s", "rto_s") <= 1.5),
    ("rto_sequential_50_s", "/ rto_50_s >= 5",
     lambda r: None if _ratio(r, "rto_sequential_50_s", "rto_50_s") is None
     else _ratio(r, "rto_sequential_50_s", "rto_50_s") >= 5),
    # issue 24, 3 + 500 (bench-keys.md)
    ("lab_500_up_s", "", None),
    ("lab_500_rss_mb", "", None),
    ("deploy_500_s", "", None),
    ("rto_500_s", "<= 1.5 x rto_s",
     lambda r: None if _ratio(r, "rto_500_s", "rto_s") is None else _ratio(r, "rto_500_s", "rto_s") <= 1.5),
    ("rto_sequential_500_s", "rto_500_s / this <= 0.25",
     lambda r: None if _ratio(r, "rto_500_s", "rto_sequential_500_s") is None
     else _ratio(r, "rto_500_s", "rto_sequential_500_s") <= 0.25),
    ("recover_s", "cli recover at 3 + 12, kill -> verified", None),
    ("recover_500_s", "<= 1.5 x recover_s",
     lambda r: None if _ratio(r, "recover_500_s", "recover_s") is None
     else _ratio(r, "recover_500_s", "recover_s") <= 1.5),
    ("preview_500_s", "<= 10 s", lambda r: _get(r, "preview_500_s") is not None and r["preview_500_s"] <= 10),
    ("noop_500_s", "<= 10 s", lambda r: _get(r, "noop_500_s") is not None and r["noop_500_s"] <= 10),
    ("noop_500_changes", "= 0", lambda r: _get(r, "noop_500_changes") is not None and r["noop_500_changes"] == 0),
    ("noop_500_remote_commands", "= 0",
     lambda r: _get(r, "noop_500_remote_commands") is not None and r["noop_500_remote_commands"] == 0),
    ("status_500_s", "<= 10 s", lambda r: _get(r, "status_500_s") is not None and r["status_500_s"] <= 10),
    ("rss_500_mb", "<= 512", lambda r: _get(r, "rss_500_mb") is not None and r["rss_500_mb"] <= 512),
    ("state_500_bytes", "<= 2 KB per host (1006 KB at 503 hosts)",
     lambda r: _get(r, "state_500_bytes") is not None and r["state_500_bytes"] <= 503 * 2048),
    ("interrupt_500_final_exit", "= 0 (the rerun after 6 interruptions verified)",
     lambda r: _get(r, "interrupt_500_final_exit") is not None and r["interrupt_500_final_exit"] == 0),
    ("operator_packets_to_old_interrupt_500", "= 0",
     lambda r: None if _get(r, "operator_packets_to_old_interrupt_500") is None
     else r["operator_packets_to_old_interrupt_500"] == 0),
    ("fill_1gib_s", "tar|ssh gcm / this >= 0.8",
     lambda r: None if _ratio(r, "fill_tar_ssh_gcm_1gib_s", "fill_1gib_s") is None
     else _ratio(r, "fill_tar_ssh_gcm_1gib_s", "fill_1gib_s") >= 0.8),
    ("fill_skopeo_direct_1gib_s", "baseline (skopeo per ref, no tunnel)", None),
    ("fill_tar_ssh_gcm_1gib_s", "baseline (raw transfer, the fill's cipher)", None),
    ("fill_noop_s", "<= 2 s", lambda r: _get(r, "fill_noop_s") is not None and r["fill_noop_s"] <= 2),
    ("h2h_pull_1gib_s", "tar|ssh gcm host to host / this >= 0.8",
     lambda r: None if _ratio(r, "h2h_tar_ssh_gcm_1gib_s", "h2h_pull_1gib_s") is None
     else _ratio(r, "h2h_tar_ssh_gcm_1gib_s", "h2h_pull_1gib_s") >= 0.8),
    ("h2h_tar_ssh_gcm_1gib_s", "baseline host to host (our cipher)", None),
    ("h2h_tar_ssh_1gib_s", "baseline host to host", None),
    ("h2h_resync_files", "= 0", lambda r: _get(r, "h2h_resync_files") is not None and r["h2h_resync_files"] == 0),
    ("h2h_resync_s", "<= 2 s", lambda r: _get(r, "h2h_resync_s") is not None and r["h2h_resync_s"] <= 2),
    ("noop_changes", "= 0", lambda r: _get(r, "noop_changes") is not None and r["noop_changes"] == 0),
    ("noop_remote_commands", "= 0",
     lambda r: _get(r, "noop_remote_commands") is not None and r["noop_remote_commands"] == 0),
    ("noop_s", "", None),
    ("preview_50_s", "<= 10 s", lambda r: _get(r, "preview_50_s") is not None and r["preview_50_s"] <= 10),
    ("rss_mb", "", None),
    ("failover_detect_s", "", None),
    ("failover_up_done_s", "", None),
    ("failover_verified_s", "<= 30 s",
     lambda r: _get(r, "failover_verified_s") is not None and r["failover_verified_s"] <= 30),
    ("failover_packets_to_old", "= 0",
     lambda r: _get(r, "failover_packets_to_old") is not None and r["failover_packets_to_old"] == 0),
    ("watch_leader_alive_verified_s", "<= 30 s",
     lambda r: _get(r, "watch_leader_alive_verified_s") is not None
     and r["watch_leader_alive_verified_s"] <= 30),
    ("watch_leader_lost_verified_s", "<= 45 s",
     lambda r: _get(r, "watch_leader_lost_verified_s") is not None
     and r["watch_leader_lost_verified_s"] <= 45),
    ("watch_packets_to_old", "= 0",
     lambda r: _get(r, "watch_packets_to_old") is not None and r["watch_packets_to_old"] == 0),
    ("standby_pull_dead_failures", "= 0 (pulls, master0 dead)",
     lambda r: _get(r, "standby_pull_dead_failures") is not None and r["standby_pull_dead_failures"] == 0),
    ("standby_pull_alive_max_s", "per image, master0 alive", None),
    ("standby_pull_dead_max_s", "per image, master0 dead: <= 3 x 30 s (containerd 1.6)",
     lambda r: _get(r, "standby_pull_dead_max_s") is not None and r["standby_pull_dead_max_s"] <= 100),
    ("standby_pull_dead_replicas_first_max_s", "same, standbys first in hosts.toml", None),
]


def _outage_targets() -> list:
    """Phase entry (bench/entry.py): per runtime and outage, 0 failures, the first pull after
    master0 went down <= 5 s, every later one within 1 s of the healthy max."""
    out = []
    for rt in ("docker", "containerd16"):
        alive = f"outage_pull_{rt}_alive_max_s"
        out.append((alive, "per image, master0 alive (entry point)", None))
        for o in ("killed", "off"):
            fail, first, later = (f"outage_pull_{rt}_{o}_{k}" for k in ("failures", "first_s", "later_max_s"))
            out.append((fail, "= 0", lambda r, k=fail: _get(r, k) is not None and r[k] == 0))
            out.append((first, "<= 5 s", lambda r, k=first: _get(r, k) is not None and r[k] <= 5))
            out.append((later, "<= alive max + 1 s",
                        lambda r, k=later, a=alive: None if _get(r, k) is None or _get(r, a) is None
                        else r[k] <= r[a] + 1))
        fail, worst = f"outage_pull_{rt}_inflight_failures", f"outage_pull_{rt}_inflight_max_s"
        out.append((fail, "= 0 (pulls in flight when master0 was killed)",
                    lambda r, k=fail: _get(r, k) is not None and r[k] == 0))
        # Reported, no goal: the cut pull waits for tcp-ut (2 s), then for the client's own
        # retry (dockerd waits 5 s before it downloads a cut layer again).
        out.append((worst, "reported (the pull cut by the kill included)", None))
    return out


TARGETS += _outage_targets()


def _outage_watch_targets() -> list:
    """Phase entrywatch (bench/entrywatch.py): the same goals with `cli watch` recovering meanwhile
    (every pull started after the outage, those during the recovery `up` included), and the
    watcher's kill -> verified within the failover goal."""
    out = []
    for o in ("killed", "off"):
        for rt in ("docker", "containerd16"):
            key = f"outage_pull_{rt}_{o}_watch"
            alive, fail, first, later = (f"{key}_{k}" for k in ("alive_max_s", "failures", "first_s", "later_max_s"))
            out.append((alive, "per image, master0 alive (entry point, cli watch)", None))
            out.append((fail, "= 0 (until one round after verified)",
                        lambda r, k=fail: _get(r, k) is not None and r[k] == 0))
            out.append((first, "<= 5 s", lambda r, k=first: _get(r, k) is not None and r[k] <= 5))
            out.append((later, "<= alive max + 1 s",
                        lambda r, k=later, a=alive: None if _get(r, k) is None or _get(r, a) is None
                        else r[k] <= r[a] + 1))
        verified = f"outage_watch_{o}_verified_s"
        out.append((verified, "<= 30 s", lambda r, k=verified: _get(r, k) is not None and r[k] <= 30))
    return out


TARGETS += _outage_watch_targets()

RATIOS = [
    ("rto_50_s / rto_s", "rto_50_s", "rto_s"),
    ("rto_sequential_50_s / rto_50_s", "rto_sequential_50_s", "rto_50_s"),
    ("rto_500_s / rto_s", "rto_500_s", "rto_s"),
    ("rto_500_s / rto_sequential_500_s", "rto_500_s", "rto_sequential_500_s"),
    ("recover_500_s / recover_s", "recover_500_s", "recover_s"),
    ("fill_tar_ssh_gcm_1gib_s / fill_1gib_s", "fill_tar_ssh_gcm_1gib_s", "fill_1gib_s"),
    ("fill_skopeo_direct_1gib_s / fill_1gib_s", "fill_skopeo_direct_1gib_s", "fill_1gib_s"),
    ("h2h_tar_ssh_gcm_1gib_s / h2h_pull_1gib_s", "h2h_tar_ssh_gcm_1gib_s", "h2h_pull_1gib_s"),
]


def verdicts(results: dict) -> dict:
    out = {}
    for key, _text, check in TARGETS:
        if check is not None and key in results:
            out[key] = bool(check(results))
    return out


def table(results: dict) -> str:
    params = results.get("params", {})
    labels = {
        "rto_s": f"rto_s (3+{params.get('nodes')} hosts)",
        "rto_50_s": f"rto_50_s (3+{params.get('nodes_large')})",
        "rto_sequential_50_s": f"rto_sequential_50_s (3+{params.get('nodes_large')})",
        "preview_50_s": f"preview_50_s (3+{params.get('nodes_large')})",
        "rss_mb": f"rss_mb (up, 3+{params.get('nodes_large')})",
        "failover_detect_s": "failover: kill -> dead decided (cli watch, 3+2)",
        "failover_up_done_s": "failover: kill -> up done",
        "failover_verified_s": "failover: kill -> verified",
        "failover_packets_to_old": "failover: packets to the old master0",
        "watch_leader_alive_verified_s": "watchpair: kill -> verified, two watchers, leader alive",
        "watch_leader_lost_verified_s": "watchpair: leader's machine killed -> verified by the other",
        "watch_packets_to_old": "watchpair: packets to the dead master0s",
        "outage_watch_killed_verified_s": "entrywatch: master0 killed -> verified (cli watch)",
        "outage_watch_off_verified_s": "entrywatch: master0 off -> verified (cli watch)",
    }
    size = params.get("copy_size_mib")
    for key in ("fill_1gib_s", "fill_skopeo_direct_1gib_s", "fill_tar_ssh_gcm_1gib_s",
                "h2h_pull_1gib_s", "h2h_tar_ssh_gcm_1gib_s", "h2h_tar_ssh_1gib_s"):
        labels[key] = f"{key} ({size} MiB)"
    rows = [("measure", "value", "target", "met")]
    met = verdicts(results)
    for key, text, check in TARGETS:
        value = results.get(key)
        if value is None:
            shown = "not measured"
        elif isinstance(value, float):
            shown = f"{value:.2f}"
        else:
            shown = str(value)
        rows.append((labels.get(key, key), shown, text,
                     "" if check is None or key not in results else ("yes" if met[key] else "NO")))
    for label, num, den in RATIOS:
        ratio = _ratio(results, num, den)
        rows.append((label, "n/a" if ratio is None else f"{ratio:.2f}", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += fill_lines(results)
    lines += profile_lines(results)
    m = results.get("machine", {})
    lines.append("")
    lines.append(f"machine: {m.get('nproc')} cores, {m.get('memory_gib')} GiB, {m.get('cpu')}; "
                 f"kernel {m.get('kernel')}; {m.get('openssh')}")
    if results.get("plugins"):
        lines.append("engine plugins: " + ", ".join(
            f"{k} {v['kind']}" for k, v in results["plugins"].items()))
    cond = results.get("conditions", {})
    if cond:
        lines.append("load average (1 min) at each measure: " + ", ".join(
            f"{k} {v['load_before']:.1f}" for k, v in cond.items() if "load_before" in v))
    if results.get("concurrent_lab0"):
        lines.append("note: lab instance 0 (make test) was active during this run; the figures "
                     "shared the 2 cores with it")
    return "\n".join(lines)


def fill_lines(results: dict) -> list[str]:
    """The fill's data, and per method (last round) the bytes on the wire to the host and where
    the CPU went: this machine's child processes, the host's processes, the store registry."""
    if "fill_bytes" not in results:
        return []
    out = ["", f"fill: {results.get('fill_refs')} refs, {results['fill_bytes']} bytes of registry tree "
               f"({results.get('fill_blobs')} blobs, {results.get('fill_blob_bytes')} bytes); per method, "
               "last round: MiB on the wire to the host; CPU s of this machine's children, the host's "
               "processes, the store registry; machine busy %"]
    wire, cpu = results.get("fill_wire_bytes", {}), results.get("fill_cpu_s", {})
    for name in ("fill", "fill_noop", "fill_skopeo_direct", "fill_tar_ssh_gcm"):
        c = cpu.get(name)
        if c is None:
            continue
        host = ", ".join(f"{k} {v:.1f}" for k, v in c.get("host_s", {}).items()) or "-"
        out.append(f"  {name:20} {wire.get(name, 0) / (1 << 20):7.1f}  client {c.get('client_tree_s', 0):5.1f}  "
                   f"host [{host}]  store {c.get('store_registry_s', 0):4.1f}  busy {c.get('machine_busy_pct')}%")
    return out


def profile_lines(results: dict) -> list[str]:
    """Where each profiled run's time went: engine start to the first command, the commands, the
    rest; the CPU of the run's process tree and of the whole machine (busy / wall x cores)."""
    prof = results.get("profile") or {}
    if not prof:
        return []
    out = ["", "profile (s: wall; first cmd at; last cmd done at; cmds; median cmd s; max parallel; "
               "engine-tree CPU s; machine busy %)"]
    for name, p in prof.items():
        busy = p.get("machine_busy_cpu_s")
        pct = (100 * busy / (p["seconds"] * p["machine_cores"])) if busy is not None and p.get("seconds") else None
        out.append(f"  {name:34} {p.get('seconds', 0):6.2f}  {p.get('first_command_at_s', '-')!s:>5}  "
                   f"{p.get('last_command_done_at_s', '-')!s:>5}  {p.get('commands', 0):>3}  "
                   f"{p.get('command_s_median', '-')!s:>5}  {p.get('max_concurrent', '-')!s:>3}  "
                   f"{p.get('engine_tree_cpu_s', '-')!s:>5}  {'-' if pct is None else f'{pct:.0f}%'}")
    return out
