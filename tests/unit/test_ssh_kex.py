"""The key exchange the CLI's ssh offers first (cli/ssh.py kex_option): the fastest of
mlkem768x25519-sha256 and curve25519-sha256 that the local ssh knows, ahead of its defaults."""

from __future__ import annotations

import os

import pytest

from cli import ssh as ssh_mod


@pytest.mark.parametrize("known, want", [
    ("sntrup761x25519-sha512@openssh.com curve25519-sha256 mlkem768x25519-sha256",
     ["-o", "KexAlgorithms=^mlkem768x25519-sha256"]),                       # OpenSSH 9.9+
    ("sntrup761x25519-sha512@openssh.com curve25519-sha256 ecdh-sha2-nistp256",
     ["-o", "KexAlgorithms=^curve25519-sha256"]),                           # 9.2 (Debian 12)
    ("diffie-hellman-group14-sha256", []),                                 # neither: defaults
])
def test_the_fastest_known_key_exchange_goes_first(tmp_path, monkeypatch, known, want):
    fake = tmp_path / "ssh"
    fake.write_text(f"#!/bin/sh\n[ \"$*\" = '-Q kex' ] || exit 9\nfor k in {known}; do echo $k; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    ssh_mod.kex_option.cache_clear()
    try:
        assert ssh_mod.kex_option() == want
    finally:
        ssh_mod.kex_option.cache_clear()


def test_the_option_is_on_every_session():
    from tests.unit.test_cli_status import make_config, M1
    with ssh_mod.SshAccess(make_config(), None) as access:
        argv = access.argv(M1)
    assert ssh_mod.kex_option() and " ".join(ssh_mod.kex_option()) in " ".join(argv)
