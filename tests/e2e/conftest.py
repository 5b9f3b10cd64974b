"""Fixtures of the e2e tier: the built engine toolchain and a real Kubernetes control plane on the
masters of a lab (``controlplane``; the stack modules get theirs with ``labstack.lab_env``).

Nothing here skips: a piece that is missing fails the test that needs it, naming the piece.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab import Lab
from lab import controlplane as cplane
from lab import toolchain
from lab.hosts import LabError

LAB_PASSPHRASE = "sealer-lab"


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def require_tools(*names: str) -> None:
    """Fail the running test, naming every binary in `names` that the toolchain lacks and why."""
    why = toolchain.explain_missing(*names)
    if why:
        pytest.fail(why, pytrace=False)


@pytest.fixture(scope="session")
def toolchain_bin() -> Path:
    try:
        path = toolchain.ensure_built()
    except toolchain.ToolchainError as e:
        pytest.fail(f"the e2e toolchain could not be built: {e}", pytrace=False)
    require_tools(*toolchain.REQUIRED)
    return path


@pytest.fixture(scope="session")
def toolchain_env(toolchain_bin, tmp_path_factory) -> dict[str, str]:
    """Environment for the engine: toolchain first on PATH, no plugin downloads or update checks, a
    private PULUMI_HOME, a file backend in a temp dir and the lab passphrase.

    The Automation API looks `pulumi` up on this process's PATH (PulumiCommand), not on the
    workspace's env_vars, so the session's os.environ gets the same PATH and PULUMI_* toggles too."""
    base = tmp_path_factory.mktemp("pulumi")
    (base / "home").mkdir()
    (base / "state").mkdir()
    env = toolchain.env()
    env.update({
        "PULUMI_HOME": str(base / "home"),
        "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": LAB_PASSPHRASE,
    })
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def controlplane(toolchain_bin, tmp_path_factory) -> cplane.ControlPlane:
    """A lab of one master and no node, running etcd + kube-apiserver + kube-controller-manager,
    for one module; removed when the module ends (lab hosts are global to the machine)."""
    lab = Lab(tmp_path_factory.mktemp("cplab"))
    lab.down()  # a crashed earlier run holds the srl- names
    try:
        lab.up(masters=1, nodes=0)
        cp = cplane.up(lab, bin_dir=toolchain_bin)
    except (cplane.ControlPlaneError, LabError) as e:
        lab.down()
        pytest.fail(f"control plane did not come up: {e}", pytrace=False)
    yield cp
    lab.down()
