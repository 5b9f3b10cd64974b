"""scripts/lib/containerd.sh: whether the containerd that serves the CRI reads certs.d, judged from
`containerd config dump` (the real binary) of the config a daemon was started with. Only `pgrep`
is a stub (it names a stand-in process whose command line carries `--config FILE`); the stand-in's
socket is a real unix socket made "at start": a config newer than it is stale."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from components.remote_scripts import SCRIPTS_DIR

V2_CERTS_D = """version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""


@pytest.fixture(scope="module", autouse=True)
def _needs_containerd():
    if not shutil.which("containerd"):
        pytest.fail("containerd not installed (make lab-deps)")


class Daemon:
    def __init__(self, pid: int, config: Path, sock: Path):
        self.pid, self.config, self.sock = pid, config, sock

    def runs(self, text: str, edited_after_start: bool = False) -> None:
        """The config it was started with (and its socket address), written before it started,
        or edited after with edited_after_start."""
        self.config.write_text(f'{text}\n[grpc]\n  address = "{self.sock}"\n')
        when = time.time() + (5 if edited_after_start else -60)
        os.utime(self.config, (when, when))


@pytest.fixture
def daemon(tmp_path):
    """A stand-in daemon: `bash .../containerd --config <tmp>/config.toml` and its socket."""
    config, sock = tmp_path / "config.toml", tmp_path / "containerd.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    fake = tmp_path / "fake" / "containerd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/bash\nsleep 60\n")
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake), "--config", str(config)])
    yield Daemon(proc.pid, config, sock)
    proc.kill()
    proc.wait()
    listener.close()


def state(tmp_path: Path, pids: list[int], path: str | None = None, pgrep_rc: int = 0) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    pgrep = bin_dir / "pgrep"
    lines = "".join(f"echo {pid}\n" for pid in pids)
    ns_rc = pgrep_rc if pgrep_rc else (0 if pids else 1)
    pgrep.write_text(f'#!/bin/bash\nif [[ "$1" == --ns ]]; then\n  (({ns_rc} == 0)) || exit {ns_rc}\nfi\n{lines}')
    pgrep.chmod(0o755)
    env = {"PATH": path or f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}
    answers = []
    for first in ("", "containerd_snapshot; "):  # read live, then from a probe's snapshot
        script = (f"source {SCRIPTS_DIR}/lib/common.sh; source {SCRIPTS_DIR}/lib/containerd.sh; "
                  f"{first}containerd_certs_d_state")
        done = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, env=env,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        answers.append(done.stdout.strip())
    assert answers[0] == answers[1], f"live {answers[0]!r}, from the snapshot {answers[1]!r}"
    return answers[0]


def test_config_path_certs_d_is_read(tmp_path, daemon):
    daemon.runs(V2_CERTS_D)
    assert state(tmp_path, [daemon.pid]) == "certs.d"


def test_unset_config_path_is_unset(tmp_path, daemon):
    daemon.runs("version = 2\n")
    assert state(tmp_path, [daemon.pid]) == "unset"


def test_version_1_config_and_a_list_of_dirs_with_certs_d(tmp_path, daemon):
    daemon.runs('[plugins.cri.registry]\n  config_path = "/etc/other:/etc/containerd/certs.d/"\n')
    assert state(tmp_path, [daemon.pid]) == "certs.d"


def test_other_dirs_are_elsewhere(tmp_path, daemon):
    daemon.runs(V2_CERTS_D.replace("/etc/containerd/certs.d", "/etc/registries"))
    assert state(tmp_path, [daemon.pid]) == "elsewhere:/etc/registries"


def test_disabled_cri_is_no_cri(tmp_path, daemon):
    daemon.runs('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
    assert state(tmp_path, [daemon.pid]) == "no-cri"


def test_config_changed_after_the_daemon_started_is_stale(tmp_path, daemon):
    """The daemon runs what it read at start: an edit since then (even a good one) is stale."""
    daemon.runs(V2_CERTS_D, edited_after_start=True)
    assert state(tmp_path, [daemon.pid]) == "stale"
    daemon.sock.unlink()  # no socket: nothing to compare with, the config is taken as read
    assert state(tmp_path, [daemon.pid]) == "certs.d"


def test_installed_without_a_daemon_is_down_and_absent_is_dash(tmp_path):
    assert state(tmp_path, []) == "down"
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("grep", "sed", "awk", "tr", "sort", "find", "timeout"):
        (tools / tool).symlink_to(shutil.which(tool))
    assert state(tmp_path, [], path=f"{tmp_path / 'bin'}:{tools}") == "-"


def test_a_pgrep_without_ns_support_falls_back_to_every_daemon(tmp_path, daemon):
    daemon.runs(V2_CERTS_D)
    assert state(tmp_path, [daemon.pid], pgrep_rc=2) == "certs.d"


# What containerd 2.2.9's `config dump` prints for lab.runtimes.CONTAINERD2_CONFIG (the lines the
# parser reads; captured from the binary lab/toolchain/gotool.sh containerd2 builds): version 3, single
# quotes, the registry under the CRI images plugin, its default imports glob instead of the file.
V3_DUMP = """version = 3
root = '/var/lib/containerd'
imports = ['/etc/containerd/conf.d/*.toml']

[grpc]
  address = '{sock}'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '{path}'

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
"""


def containerd_2_stub(tmp_path: Path, dump: str) -> None:
    """A `containerd` on the test's PATH (ahead of Debian's 1.6) that prints ``dump`` for
    `config dump`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "dump.toml").write_text(dump)
    stub = bin_dir / "containerd"
    stub.write_text(f"#!/bin/bash\ncat '{tmp_path / 'dump.toml'}'\n")
    stub.chmod(0o755)


def test_containerd_2_dump_with_certs_d_is_read(tmp_path, daemon):
    """containerd 2.x: the images plugin's config_path, read from a single-quoted dump."""
    daemon.runs("version = 3\n")
    containerd_2_stub(tmp_path, V3_DUMP.format(sock=daemon.sock, path="/etc/containerd/certs.d"))
    assert state(tmp_path, [daemon.pid]) == "certs.d"


def test_containerd_2_dump_elsewhere_and_unset(tmp_path, daemon):
    daemon.runs("version = 3\n")
    containerd_2_stub(tmp_path, V3_DUMP.format(sock=daemon.sock, path="/etc/registries"))
    assert state(tmp_path, [daemon.pid]) == "elsewhere:/etc/registries"
    containerd_2_stub(tmp_path, V3_DUMP.format(sock=daemon.sock, path=""))
    assert state(tmp_path, [daemon.pid]) == "unset"


def test_containerd_2_config_edited_after_start_is_stale(tmp_path, daemon):
    """2.x's dump does not list the config file among its imports: the file itself is still
    compared with the daemon's socket."""
    daemon.runs("version = 3\n", edited_after_start=True)
    containerd_2_stub(tmp_path, V3_DUMP.format(sock=daemon.sock, path="/etc/containerd/certs.d"))
    assert state(tmp_path, [daemon.pid]) == "stale"


def test_a_snapshot_reads_the_daemons_and_their_config_once(tmp_path, daemon):
    """status-probe.sh asks where containerd reads hosts.toml and what its CRI reads: after
    containerd_snapshot both answer from one pgrep and one `config dump` (each pgrep walks every
    process of a shared PID namespace: 0.34 s at 3 + 500 in the lab); without one, two of each."""
    daemon.runs(V2_CERTS_D)
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "pgrep").write_text(f"#!/bin/bash\necho pgrep >>{calls}\necho {daemon.pid}\n")
    (bin_dir / "containerd").write_text(
        f"#!/bin/bash\necho containerd >>{calls}\nexec {shutil.which('containerd')} \"$@\"\n")
    for tool in ("pgrep", "containerd"):
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}
    seen = {}
    for first in ("", "containerd_snapshot; "):
        calls.write_text("")
        script = (f"source {SCRIPTS_DIR}/lib/common.sh; source {SCRIPTS_DIR}/lib/containerd.sh; "
                  f"source {SCRIPTS_DIR}/lib/hosts-dir.sh; {first}"
                  'echo "$(containerd_hosts_dir)"; echo "$(containerd_certs_d_state)"')
        done = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, env=env,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["/etc/containerd/certs.d", "certs.d"], done.stdout
        seen[first] = calls.read_text().split()
    assert sorted(seen[""]) == ["containerd", "containerd", "pgrep", "pgrep"], seen
    assert sorted(seen["containerd_snapshot; "]) == ["containerd", "pgrep"], seen
