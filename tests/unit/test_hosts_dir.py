"""scripts/lib/hosts-dir.sh: the directory configure-node.sh writes hosts.toml into is the CRI
registry config_path the node's containerd really uses, read from the real `containerd config
dump` of the config a daemon was started with (the stand-in daemon and the pgrep stub of
test_containerd_state), else from the config file itself; the first entry of a `:` list, without
its trailing slash; /etc/containerd/certs.d when nothing sets one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.remote_scripts import SCRIPTS_DIR
from tests.unit.test_containerd_state import V2_CERTS_D, daemon  # noqa: F401 (fixture)

BASEFS = ('version = 2\n[plugins]\n  [plugins."io.containerd.grpc.v1.cri"]\n'
          '    sandbox_image = "sea.hub:5000/pause:3.6"\n'
          '    [plugins."io.containerd.grpc.v1.cri".registry]\n      config_path = "/etc/docker/certs.d/"\n')


def hosts_dir(tmp_path: Path, pids: list[int], default_config: Path | None = None,
              with_containerd: bool = True) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    pgrep = bin_dir / "pgrep"
    pgrep.write_text("#!/bin/bash\n" + "".join(f"echo {pid}\n" for pid in pids) + ("" if pids else "exit 1\n"))
    pgrep.chmod(0o755)
    path = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"
    if not with_containerd:  # only the tools the library needs, no containerd binary
        for tool in ("awk", "timeout", "cat", "tr"):
            (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True,
                                                       text=True).stdout.strip())
        path = str(bin_dir)
    default = f"CONTAINERD_DEFAULT_CONFIG={default_config or tmp_path / 'none.toml'}; "
    script = (f"source {SCRIPTS_DIR}/lib/common.sh; source {SCRIPTS_DIR}/lib/containerd.sh; "
              f"source {SCRIPTS_DIR}/lib/hosts-dir.sh; {default} containerd_hosts_dir")
    done = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True,
                          env={"PATH": path}, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_basefs_config_path_is_docker_s_certs_d_without_its_slash(tmp_path, daemon):
    daemon.runs(BASEFS)
    assert hosts_dir(tmp_path, [daemon.pid]) == "/etc/docker/certs.d"


def test_the_lab_s_and_containerd_s_default_is_kept(tmp_path, daemon):
    daemon.runs(V2_CERTS_D)
    assert hosts_dir(tmp_path, [daemon.pid]) == "/etc/containerd/certs.d"


def test_unset_config_path_falls_back_to_containerd_certs_d(tmp_path, daemon):
    daemon.runs("version = 2\n")
    assert hosts_dir(tmp_path, [daemon.pid]) == "/etc/containerd/certs.d"


@pytest.mark.parametrize("value, first", [
    ("/etc/registries/:/etc/containerd/certs.d", "/etc/registries"),
    ("/etc/docker/certs.d//", "/etc/docker/certs.d"),
    ("/x", "/x"),
])
def test_the_first_entry_of_a_list_is_written_into(tmp_path, daemon, value, first):
    daemon.runs(V2_CERTS_D.replace("/etc/containerd/certs.d", value))
    assert hosts_dir(tmp_path, [daemon.pid]) == first


def test_version_1_config_is_read_through_the_dump(tmp_path, daemon):
    daemon.runs('[plugins.cri.registry]\n  config_path = "/etc/v1-dir"\n')
    assert hosts_dir(tmp_path, [daemon.pid]) == "/etc/v1-dir"


def test_no_daemon_reads_the_default_config_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(BASEFS)
    assert hosts_dir(tmp_path, [], default_config=config) == "/etc/docker/certs.d"
    assert hosts_dir(tmp_path / "none", [], default_config=tmp_path / "missing.toml") == "/etc/containerd/certs.d"


@pytest.mark.parametrize("text, want", [
    (BASEFS, "/etc/docker/certs.d"),
    ("version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/v3'  # comment\n", "/etc/v3"),
    ('[plugins.cri.registry]\n  config_path = "/etc/v1"\n', "/etc/v1"),
    ('[plugins."io.containerd.grpc.v1.cri".registry.mirrors]\n  config_path = "/not/this"\n', "/etc/containerd/certs.d"),
    ('[plugins."io.containerd.grpc.v1.cri".registry]\n  # config_path = "/commented"\n', "/etc/containerd/certs.d"),
])
def test_without_containerd_the_file_itself_is_parsed(tmp_path, text, want):
    """A node where `containerd` cannot run the dump (no binary on PATH): the default config file,
    accept and reject cases of the table and key."""
    (tmp_path / "sub").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(text)
    assert hosts_dir(tmp_path / "sub", [], default_config=config, with_containerd=False) == want
