"""`up`/`down` are idempotent and `down` leaves nothing behind, even after a crash."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from lab import Lab
from lab.hosts import PREFIX, REPO, SUBNET


def test_up_down_leaves_nothing(tmp_path, clean_slate, leftovers):
    """A full up then down: no srl- netns, link, nft table, mount, holder or sshd remains, and the
    state dir holds none of the lab's files."""
    clean_slate()
    lab = Lab(tmp_path / "state")
    t0 = time.monotonic()
    inv = lab.up(masters=3, nodes=2)
    up_s = time.monotonic() - t0
    assert [h["ip"] for h in inv["hosts"]] == [str(SUBNET.network_address + octet)
                                               for octet in (11, 12, 13, 21, 22)]
    assert [h["role"] for h in inv["hosts"]] == ["master"] * 3 + ["node"] * 2
    assert all(h["host_key"].startswith("ssh-ed25519 ") and h["ssh_port"] == 22
               for h in inv["hosts"])
    assert leftovers()  # sanity: the probe sees a running lab
    t0 = time.monotonic()
    lab.down()
    down_s = time.monotonic() - t0
    assert leftovers() == []
    assert not (tmp_path / "state").exists()
    print(f"5 hosts: up {up_s:.2f}s down {down_s:.2f}s")


def test_up_is_idempotent_and_reconciles(tmp_path, clean_slate, leftovers):
    """A second `up` with the same shape changes nothing (same host keys, same holders); a smaller
    shape removes the extra hosts."""
    clean_slate()
    lab = Lab(tmp_path / "state")
    try:
        first = lab.up(masters=2, nodes=1)
        holders = [lab.holder_pid(h["name"]) for h in first["hosts"]]
        t0 = time.monotonic()
        again = lab.up(masters=2, nodes=1)
        assert time.monotonic() - t0 < 2
        assert again["hosts"] == first["hosts"]
        assert [lab.holder_pid(h["name"]) for h in again["hosts"]] == holders
        smaller = lab.up(masters=1, nodes=0)
        assert [h["name"] for h in smaller["hosts"]] == [f"{PREFIX}11"]
        assert not os.path.exists(f"/sys/class/net/{PREFIX}12")
        assert not os.path.exists(f"/sys/class/net/{PREFIX}21")
    finally:
        lab.down()
    assert leftovers() == []


def test_down_after_crash_finds_leftovers_by_name(tmp_path, clean_slate, leftovers):
    """A test that died mid-way (its python killed, its state dir deleted) still gets cleaned:
    `down` from a fresh state dir finds the hosts by the srl- prefix."""
    clean_slate()
    state = tmp_path / "crashed"
    # The lab comes up in a child process that is then SIGKILLed, like a killed pytest.
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys, time; from lab import Lab;"
                              f"Lab({str(state)!r}).up(masters=2, nodes=1);"
                              "print('up', flush=True); time.sleep(600)"],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "up"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert json.loads((state / "inventory.json").read_text())["hosts"]
    shutil.rmtree(state)
    Lab(tmp_path / "fresh").down()
    assert leftovers() == []


def test_cli_up_down(tmp_path, clean_slate, leftovers):
    """`python -m lab up --hosts N` / `down` as the Makefile targets run them."""
    clean_slate()
    env = dict(os.environ, SEALER_LAB_DIR=str(tmp_path / "state"))
    up = subprocess.run([sys.executable, "-m", "lab", "up", "--hosts", "4"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        inv = json.loads((tmp_path / "state" / "inventory.json").read_text())
        assert [h["role"] for h in inv["hosts"]] == ["master"] * 3 + ["node"]
    finally:
        down = subprocess.run([sys.executable, "-m", "lab", "down"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert leftovers() == []
