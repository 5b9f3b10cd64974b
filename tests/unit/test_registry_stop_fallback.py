"""scripts/lib/registry.sh's refusal before a stop on hosts that cannot take it: without `nft`,
or with an `nft` that fails (a kernel without nf_tables), it says so and returns 0, so the stop
goes on as before (the lab test, tests/lab/test_registry_stop.py, covers the refusal itself)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from components.remote_scripts import SCRIPTS_DIR, compact


def refuse(tmp_path: Path, nft: str | None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "awk"):
        (bin_dir / tool).symlink_to(subprocess.run(["sh", "-c", f"command -v {tool}"],
                                                   capture_output=True, text=True).stdout.strip())
    if nft is not None:
        (bin_dir / "nft").write_text(nft)
        (bin_dir / "nft").chmod(0o755)
    libs = "".join(compact((SCRIPTS_DIR / "lib" / n).read_text()) for n in ("common.sh", "registry.sh"))
    return subprocess.run([str(bin_dir / "bash"), "-s"], input=libs + "refuse_new_connections 5000\necho went-on\n",
                          capture_output=True, text=True, env={"PATH": str(bin_dir)}, timeout=30)


def test_without_nft_the_stop_goes_on(tmp_path):
    done = refuse(tmp_path, None)
    assert done.returncode == 0 and done.stdout == "went-on\n", done.stderr
    assert "nft not found" in done.stderr


def test_an_nft_that_fails_is_warned_about_and_the_stop_goes_on(tmp_path):
    done = refuse(tmp_path, "#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule' >&2\nexit 1\n")
    assert done.returncode == 0 and done.stdout == "went-on\n", done.stderr
    assert "warning: nft could not add table inet sealer_registry_drain" in done.stderr
    assert "failed at line" not in done.stderr          # the ERR trap did not fire
