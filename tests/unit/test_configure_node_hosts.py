"""scripts/configure-node.sh's hosts entry, run for real on a file: a host whose one mapping of the
domain already points at master0 is left as it is (sealer v0.8's unmarked line too,
pkg/runtime/registry.go@v0.8.7), anything else becomes one marked line; --keep-hosts (sealer's HA
layout) leaves the file alone whatever it says."""

from __future__ import annotations

import subprocess

import pytest

from components.remote_scripts import SCRIPTS_DIR

IP, OTHER = "198.18.0.11", "198.18.0.12"
BASE = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
MARKED = f"{IP} sea.hub #hostalias-set-by-sealer\n"


def configure(tmp_path, text: str, *flags: str) -> tuple[str, str]:
    hosts = tmp_path / "hosts"
    hosts.write_text(text)
    done = subprocess.run(["bash", str(SCRIPTS_DIR / "configure-node.sh"), *flags, "sea.hub", IP, "",
                           str(hosts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return hosts.read_text(), done.stderr


@pytest.mark.parametrize("line", [
    f"{IP} sea.hub\n",                        # sealer v0.8: unmarked
    MARKED,                                   # sealer v0.9+
    f"{IP}\tsea.hub\t# a comment\n",
    f"{IP} sea.hub registry.local\n",          # another name on the same line
])
def test_one_mapping_to_master0_is_kept_byte_for_byte(tmp_path, line):
    text = BASE + line
    after, err = configure(tmp_path, text)
    assert after == text and "unchanged: sea.hub -> 198.18.0.11" in err


@pytest.mark.parametrize("text, want", [
    (BASE + f"{OTHER} sea.hub\n", BASE + MARKED),                                  # elsewhere
    (BASE + f"{OTHER} sea.hub #hostalias-registry\n" + MARKED, BASE + MARKED),     # stale + right
    (BASE + MARKED + MARKED, BASE + MARKED),                                       # duplicate
    (BASE, BASE + MARKED),                                                         # none
    (BASE + f"{OTHER} sea.hub registry.local\n", BASE + f"{OTHER} registry.local\n" + MARKED),
])
def test_anything_else_becomes_one_marked_line(tmp_path, text, want):
    after, _ = configure(tmp_path, text)
    assert after == want


def test_keep_hosts_leaves_even_a_wrong_mapping(tmp_path):
    text = BASE + f"10.103.97.2 sea.hub #hostalias-set-by-sealer\n"
    after, err = configure(tmp_path, text, "--keep-hosts")
    assert after == text and "kept:" in err
