"""The containerd a sealer node runs, as basefs configures it.

basefs' containerd config (context/containerd/rootfs/etc/dump-config.toml@main, also on branches
sealer-v0.9.1 and new_basefs; its README context/README.md@main:188-199 shows the same file) sets
the CRI registry ``config_path = "/etc/docker/certs.d/"``: a containerd node reads the CA sealer
writes for docker, ``/etc/docker/certs.d/<domain>:<port>/<domain>.crt`` (pkg/registry/local.go@
v0.11.0:239-253), and with no ``hosts.toml`` in that directory containerd 1.6 loads its ``*.crt``
files as CAs, the way docker does. (basefs' containerd.sh@main copies
``etc/containerd-config.toml``; the tree ships the file as ``dump-config.toml``, which the README
tells users to edit: the content is the fact modelled here.)

Every lab host starts with the lab's own config (``lab.hosts.CONTAINERD_CONFIG``,
``config_path = "/etc/containerd/certs.d"``); ``containerd_basefs`` gives one host basefs' file,
``containerd_lab_default`` gives the lab's back. Both restart that host's containerd only when the
file changes. ``containerd_config_path`` says which certs directory the host's containerd reads:
what ``lab.pull.containerd_pull`` trusts on that host.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from lab.hosts import CONTAINERD_CONFIG, CONTAINERD_PID, Lab, LabError

CONFIG_FILE = "/etc/containerd/config.toml"
LAB_CONFIG_PATH = "/etc/containerd/certs.d"
BASEFS_CONFIG_PATH = "/etc/docker/certs.d/"
# basefs' dump-config.toml (no final newline there either): every other setting is containerd's
# default, which are the lab's root, state and socket too.
BASEFS_CONTAINERD_CONFIG = """\
version = 2
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "sea.hub:5000/pause:3.6"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/docker/certs.d/\""""


def _config_file_in_use(lab: Lab, host: str) -> str:
    """The file the host's running containerd was started with (``--config``/``-c``), else the
    default one."""
    try:
        pid = int(lab.host_path(host, CONTAINERD_PID).read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (OSError, ValueError, LabError):
        return CONFIG_FILE
    for flag in ("--config", "-c"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1]
    return CONFIG_FILE


def containerd_config_path(lab: Lab, host: str) -> str | None:
    """The CRI registry ``config_path`` of the config the host's containerd uses (None when the
    file sets none)."""
    path = lab.host_path(host, _config_file_in_use(lab, host))
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"{host}: {path.name} is not TOML: {e}") from e
    registry = (config.get("plugins", {}).get("io.containerd.grpc.v1.cri", {})
                .get("registry", {}))
    value = registry.get("config_path")
    return value or None


def _write_config(lab: Lab, host: str, text: str) -> bool:
    target = lab.host_path(host, CONFIG_FILE)
    if target.exists() and target.read_text() == text and lab.containerd_running(host):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    lab.stop_containerd(host)
    lab.start_containerd(host)
    return True


def containerd_basefs(lab: Lab, host: str) -> bool:
    """The host's containerd runs with basefs' config (``config_path = "/etc/docker/certs.d/"``);
    restarted if the file changed. True when it changed."""
    return _write_config(lab, host, BASEFS_CONTAINERD_CONFIG)


def containerd_lab_default(lab: Lab, host: str) -> bool:
    """The host's containerd runs with the lab's config again (``/etc/containerd/certs.d``)."""
    return _write_config(lab, host, CONTAINERD_CONFIG)
