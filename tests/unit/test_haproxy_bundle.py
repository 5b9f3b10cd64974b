"""The HAProxy bundle builder (cli/haproxy_bundle.py), hermetic: a stand-in haproxy package made
here with dpkg-deb (its "binary" is /bin/true, a dynamic glibc executable like haproxy), so no
download. The real package is built and run in tests/lab/test_node_entry_bundle.py."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cli import haproxy_bundle as hb

pytestmark = pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs Debian's dpkg-deb")


def stand_in_deb(tmp: Path, version: str = "9.9.9-1+test1") -> Path:
    root = tmp / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: haproxy\nVersion: {version}\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        "Description: stand-in\n")
    (root / "usr" / "sbin").mkdir(parents=True)
    shutil.copy("/bin/true", root / "usr" / "sbin" / "haproxy")
    (root / "usr" / "share" / "doc" / "haproxy").mkdir(parents=True)
    (root / "usr" / "share" / "doc" / "haproxy" / "copyright").write_text("GPL-2\n")
    for path in root.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    deb = tmp / f"haproxy_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_of_one_package_are_the_same_bytes(tmp_path):
    """Reproducible: the same .deb and the same machine give the same tarball sha256."""
    deb = hb.deb_of(stand_in_deb(tmp_path))
    first = hb.build(deb, tmp_path / "a")
    second = hb.build(deb, tmp_path / "b")
    assert first.name == second.name == "haproxy-9.9.9-1+test1-amd64.tar.gz"
    assert sha(first) == sha(second)


def test_the_bundle_holds_binary_wrapper_loader_libraries_and_a_manifest(tmp_path):
    """bin/haproxy from the package, bin/haproxy-entry (the repo's wrapper), the loader and every
    library ldd names; entries sorted, owner 0, one mtime (the binary's in the package);
    BUNDLE pins the version and the .deb's sha256; SHA256SUMS verifies (check)."""
    deb = hb.deb_of(stand_in_deb(tmp_path))
    tarball = hb.build(deb, tmp_path / "out")
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    assert names[:3] == ["bin", "doc", "lib"]
    assert names[3:] == sorted(names[3:])
    assert {m.uid for m in members} == {0} and {m.gid for m in members} == {0}
    assert {m.mtime for m in members} == {1_700_000_000}
    assert files["bin/haproxy"] == Path("/bin/true").read_bytes()
    assert files["bin/haproxy-entry"] == hb.WRAPPER.read_bytes()
    assert "lib/ld-linux-x86-64.so.2" in files and "lib/libc.so.6" in files
    bundle = files["BUNDLE"].decode().splitlines()
    assert bundle[:4] == ["version 9.9.9-1+test1", "arch amd64", f"deb {deb.path.name}",
                          f"deb_sha256 {sha(deb.path)}"]
    assert any(line.startswith("library lib/libc.so.6 from libc6 ") for line in bundle)
    sums = dict(reversed(line.split("  ")) for line in files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    assert all(sums[n] == hashlib.sha256(files[n]).hexdigest() for n in sums)
    hb.check(tarball, run_haproxy=False)


def test_a_tampered_bundle_fails_the_check(tmp_path):
    tarball = hb.build(hb.deb_of(stand_in_deb(tmp_path)), tmp_path / "out")
    raw = io.BytesIO()
    with tarfile.open(tarball) as src, tarfile.open(fileobj=raw, mode="w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name == "lib/libc.so.6":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    tarball.write_bytes(raw.getvalue())
    with pytest.raises(hb.BundleError, match="sha256sum"):
        hb.check(tarball, run_haproxy=False)


def test_a_package_other_than_haproxy_is_refused(tmp_path):
    deb = stand_in_deb(tmp_path)
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tmp_path / "r")], check=True)
    control = tmp_path / "r" / "DEBIAN" / "control"
    control.write_text(control.read_text().replace("Package: haproxy", "Package: nginx"))
    other = tmp_path / "nginx.deb"
    subprocess.run(["dpkg-deb", "--build", str(tmp_path / "r"), str(other)], check=True, capture_output=True)
    with pytest.raises(hb.BundleError, match="not Debian's haproxy package"):
        hb.deb_of(other)


@pytest.mark.parametrize("name", ["haproxy-2.6.12-1+deb12u4-amd64.tar.gz", "haproxy-3.0.5-1~bpo12+1-amd64.tar.gz"])
def test_tarball_names_accepted(name):
    assert hb.TARBALL.fullmatch(name)


@pytest.mark.parametrize("name", ["haproxy-2.6.12-arm64.tar.gz", "haproxy-1:2.6-amd64.tar.gz",
                                  "haproxy-2.6 x-amd64.tar.gz", "haproxy-amd64.tar.gz", "haproxy-2.6-amd64.tgz",
                                  "haproxy-../x-amd64.tar.gz"])
def test_tarball_names_refused(name):
    assert not hb.TARBALL.fullmatch(name)


def test_find_bundle_takes_the_one_there_and_refuses_to_guess_between_two(tmp_path):
    assert hb.find_bundle(tmp_path) is None
    (tmp_path / "haproxy-2.6.12-1+deb12u4-amd64.tar.gz").write_bytes(b"x")
    assert hb.find_bundle(tmp_path).name == "haproxy-2.6.12-1+deb12u4-amd64.tar.gz"
    (tmp_path / "haproxy-2.6.12-1+deb12u5-amd64.tar.gz").write_bytes(b"x")
    with pytest.raises(hb.BundleError, match="2 bundles"):
        hb.find_bundle(tmp_path)
