"""scripts/adopt-read.sh run for real (bash, a sealer rootfs in a temp dir, no kubectl on PATH):
what it sends back is what `SealerFiles`/`NodeFacts` read. Changes nothing it reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cli.adopt import NodeFacts, SealerFiles, configmaps_from_master0
from components.remote_scripts import script_run

FIXTURES = Path(__file__).parent / "fixtures" / "sealer"
ID_A, ID_B = "a" * 64, "b" * 64


def run(*args: str, path: str = "/usr/bin:/bin") -> bytes:
    script = script_run("adopt-read.sh", *args)
    done = subprocess.run(["bash", "-c", script.command], input=script.stdin.encode(),
                          capture_output=True, timeout=30, env={"PATH": path, "HOME": "/nonexistent"})
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def sealer_host(tmp_path: Path) -> tuple[Path, Path]:
    home = tmp_path / "root" / ".sealer"
    home.mkdir(parents=True)
    (home / "Clusterfile").write_text((FIXTURES / "v0.11" / "Clusterfile").read_text())
    (home / "application.json").write_text((FIXTURES / "v0.11" / "application.json").read_text())
    rootfs = tmp_path / "rootfs"
    flags = rootfs / "cache" / "registry"
    flags.mkdir(parents=True)
    for name, when in ((ID_B, 2_000_000_000), (ID_A, 1_000_000_000)):
        (flags / name).write_text("")
        os.utime(flags / name, (when, when))
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "registry.yml").write_text((FIXTURES / "v0.8" / "registry.yml").read_text())
    return home / "Clusterfile", rootfs


def test_the_flags_with_mtimes_and_the_log_come_back(tmp_path):
    clusterfile, rootfs = sealer_host(tmp_path)
    files = SealerFiles.from_tar(run("--clusterfile", str(clusterfile), "--rootfs", str(rootfs)))
    lines = sorted(files.flags.splitlines())
    assert [line.split(" ", 1)[1] for line in lines] == [ID_A, ID_B]
    assert [float(line.split(" ", 1)[0]) for line in lines] == [1e9, 2e9]
    assert files.history == (FIXTURES / "v0.11" / "application.json").read_text()
    assert files.registry_settings == (FIXTURES / "v0.8" / "registry.yml").read_text()
    assert "cm.sealer-clusterfile" not in files.meta   # not asked for


def test_kubectl_missing_on_master0_is_reported_not_fatal(tmp_path):
    clusterfile, rootfs = sealer_host(tmp_path)
    files = SealerFiles.from_tar(run("--clusterfile", str(clusterfile), "--rootfs", str(rootfs),
                                     "--kubectl"))
    got, problems = configmaps_from_master0(files)
    assert got == {"sealer-clusterfile": None, "sealer-registry": None} and len(problems) == 2


def test_the_node_mode_sends_the_domains_hosts_lines_only():
    facts = NodeFacts.from_tar("10.0.0.21", run("--node", "localhost"))
    assert facts.hosts_lines and all("localhost" in line.split()[1:] for line in facts.hosts_lines)
    assert facts.lvscare is None or "reg-lvscare" in facts.lvscare
