"""The engine toolchain for the e2e tier: where it is cached, how to build it, how to run with it.

`build.sh` owns the cache key (versions + a hash of the wrapper modules and itself); this module asks
it rather than computing the key a second way.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parent / "build.sh"
# The lab's extra Go tools, each cached apart from the engine toolchain: containerd 2.x for the
# lab's containerd 2.x nodes (opt-in, `make toolchain-containerd2`: a cold build takes minutes that
# CI's cold run does not have) and the S3 server of the s3:// backend tests (`make toolchain`).
GOTOOL_SCRIPT = Path(__file__).resolve().parent / "gotool.sh"
# Stand-ins for the two plugins the proxy refuses (see lab/plugins/README.md).
STAND_INS = Path(__file__).resolve().parent.parent / "plugins"
# A directory holding the real pulumi-language-python / pulumi-resource-command, when one is at
# hand (e.g. built from source elsewhere): it goes ahead of the stand-ins on PATH.
REAL_PLUGINS_ENV = "SEALER_PLUGINS_DIR"
PLUGINS = ("pulumi-language-python", "pulumi-resource-command")

# Binaries a complete toolchain holds; the e2e fixtures name the missing ones.
REQUIRED = (
    "pulumi",
    "pulumi-language-python-exec",
    "pulumi-resource-pulumi-python",
    "pulumi-resource-kubernetes",
    "kube-apiserver",
    "kube-controller-manager",
    "etcd",
)
# Wanted but not served by the Go module proxy (403 "This module version is not available"), so
# build.sh cannot make them; tests that need them fail with this text.
WHY_MISSING = {
    "pulumi-language-python": (
        "pulumi-language-python is not built: the proxy refuses module "
        "github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 at every version and "
        "commit (403). Programs run from a work_dir need it; inline Automation API programs do not"),
    "pulumi-resource-command": (
        "pulumi-resource-command is not built: the proxy refuses github.com/pulumi/pulumi-command/"
        "provider at v1.2.1's commit 7f3eb6f3b77c (403), and its dependency "
        "github.com/pulumi/pulumi-go-provider too"),
}


class ToolchainError(RuntimeError):
    """The toolchain could not be located or built."""


def _run_build_script(*args: str) -> str:
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), *args], check=True, text=True, stdout=subprocess.PIPE
        )
    except subprocess.CalledProcessError as e:
        raise ToolchainError(f"{BUILD_SCRIPT} {' '.join(args)} failed with exit code {e.returncode}") from e
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise ToolchainError(f"{BUILD_SCRIPT} {' '.join(args)} printed nothing")
    return lines[-1]


def bin_dir() -> Path:
    """The cache key's bin dir (it may not be built yet)."""
    return Path(_run_build_script("bin-dir"))


def is_built() -> bool:
    return (bin_dir().parent / "COMPLETE").is_file()


def ensure_built() -> Path:
    """Build the toolchain unless the cache already holds it; return its bin dir."""
    path = bin_dir()
    if not (path.parent / "COMPLETE").is_file():
        path = Path(_run_build_script("build"))
    return path


def plugin_dirs() -> list[Path]:
    """Where the engine finds the two plugins the proxy refuses: the real ones if
    SEALER_PLUGINS_DIR names a directory, then the stand-ins."""
    real = os.environ.get(REAL_PLUGINS_ENV)
    return [*([Path(real)] if real else []), STAND_INS]


def plugin_origin() -> dict[str, str]:
    """Which file the engine will run for each of PLUGINS (the first on the plugin dirs)."""
    found = {}
    for name in PLUGINS:
        for directory in plugin_dirs():
            if os.access(directory / name, os.X_OK):
                found[name] = str(directory / name)
                break
    return found


def missing(names: tuple[str, ...] = REQUIRED) -> list[str]:
    dirs = [bin_dir(), *plugin_dirs()]
    return [name for name in names if not any(os.access(d / name, os.X_OK) for d in dirs)]


def explain_missing(*names: str) -> str | None:
    """None when the toolchain has every binary in `names`, else a message naming the missing ones
    and why they are missing."""
    absent = missing(names)
    if not absent:
        return None
    reasons = "; ".join(WHY_MISSING.get(name, f"{name}: run `make toolchain`") for name in absent)
    return f"toolchain {bin_dir()} lacks {', '.join(absent)}: {reasons}"


def versions() -> dict[str, str]:
    """The versions build.sh pins (its `readonly NAME_VERSION="..."` lines), e.g. {"pulumi": "3.274.0"}."""
    found = re.findall(r'^readonly ([A-Z_]+)_VERSION="([^"]+)"$', BUILD_SCRIPT.read_text(), re.M)
    return {name.lower().replace("_", "-"): value for name, value in found}


def env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment that runs the toolchain: its bin dir first on PATH, no plugin downloads, no
    update checks. Callers add PULUMI_BACKEND_URL / PULUMI_CONFIG_PASSPHRASE / PULUMI_HOME."""
    result = dict(os.environ if base is None else base)
    first = [str(bin_dir()), *(str(d) for d in plugin_dirs())]
    rest = [p for p in result.get("PATH", os.defpath).split(os.pathsep) if p and p not in first]
    result["PATH"] = os.pathsep.join([*first, *rest])
    result["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    result["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    return result


def gotool_bin_dir(tool: str) -> Path:
    """Where gotool.sh puts (or has put) ``tool``'s binaries."""
    done = subprocess.run(["bash", str(GOTOOL_SCRIPT), tool, "bin-dir"], check=True, text=True,
                          stdout=subprocess.PIPE)
    return Path(done.stdout.strip().splitlines()[-1])


def gotool_version(tool: str) -> str:
    """The version gotool.sh pins for ``tool``, e.g. "2.2.9"."""
    done = subprocess.run(["bash", str(GOTOOL_SCRIPT), tool, "version"], check=True, text=True,
                          stdout=subprocess.PIPE)
    return done.stdout.strip()


def gotool_missing(tool: str, binaries: tuple[str, ...], how: str) -> str | None:
    """None when ``tool`` is built, else why not and ``how`` to build it."""
    path = gotool_bin_dir(tool)
    if (path.parent / "COMPLETE").is_file() and all(os.access(path / n, os.X_OK) for n in binaries):
        return None
    return f"{tool} v{gotool_version(tool)} is not built ({path} is absent): {how}"


def containerd2_bin_dir() -> Path:
    """Where gotool.sh puts (or has put) ``containerd`` and ``ctr`` 2.x."""
    return gotool_bin_dir("containerd2")


def containerd2_version() -> str:
    """The containerd 2.x version gotool.sh pins, e.g. "2.2.9"."""
    return gotool_version("containerd2")


def containerd2_missing() -> str | None:
    """None when containerd 2.x is built, else why not and how to build it."""
    return gotool_missing("containerd2", ("containerd", "ctr"),
                          "it is opt-in, `make toolchain-containerd2` builds it from the Go module "
                          "proxy (about 3.5 min cold)")


def versitygw_bin_dir() -> Path:
    """Where gotool.sh puts (or has put) ``versitygw``."""
    return gotool_bin_dir("versitygw")


def versitygw_missing() -> str | None:
    """None when the lab's S3 server is built, else why not and how to build it."""
    return gotool_missing("versitygw", ("versitygw",),
                          "`make toolchain` builds it from the Go module proxy")
