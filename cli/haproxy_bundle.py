"""`haproxy-bundle`: a portable HAProxy for nodes without one (registry.local_registry.node_entry).

Built on the operator's machine (Debian, x86_64) from Debian's own package: ``apt-get download
haproxy`` into the cache, the binary taken out with ``dpkg-deb -x``, the shared libraries it
needs (``ldd``, from this machine's Debian packages) and the dynamic loader beside it, and
``bin/haproxy-entry`` (scripts/bundle/haproxy-entry.sh), which runs the binary through that
loader. Nothing of the node's own libraries is used, so the bundle runs on any x86_64 Linux.

The tarball ``haproxy-<debian version>-<arch>.tar.gz`` is reproducible: sorted entries, every
mtime the package's binary's, owner 0, gzip without a name or time. ``BUNDLE`` says where each
piece came from (the .deb's version and sha256, each library's package and version);
``SHA256SUMS`` (sha256sum's format) covers every other file, and the node checks it before the
bundle is used (scripts/lib/entry.sh).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cli.common import EXIT_OK, EXIT_REFUSED, CliError, guarded
from config.registry import HAPROXY_BUNDLE_NAME

NAME = "haproxy-bundle"
HELP = "build the HAProxy bundle node_entry ships to nodes without haproxy (from Debian's package)"
DESCRIPTION = """\
Download Debian's haproxy package (apt-get download) into the cache, take its binary and the
libraries and loader it needs from this machine, and write the reproducible tarball
haproxy-<version>-<arch>.tar.gz there, after checking that it runs (`-vv`, `-c -f`) through its
own loader. registry.local_registry.node_entry ships it to the nodes (node_entry.haproxy: auto or
bundle). Needs Debian's apt-get and dpkg-deb on an x86_64 machine.
"""

PROJECT_DIR = Path(__file__).resolve().parent.parent
CACHE_DIR = PROJECT_DIR / ".cache" / "haproxy-bundle"
WRAPPER = PROJECT_DIR / "scripts" / "bundle" / "haproxy-entry.sh"
LOADER = "ld-linux-x86-64.so.2"
TARBALL = HAPROXY_BUNDLE_NAME  # what the config and the node script take
_LDD_LINE = re.compile(r"^\s*(?P<name>\S+)\s+=>\s+(?P<path>/\S+)\s+\(0x[0-9a-f]+\)$")
_LDD_LOADER = re.compile(r"^\s*(?P<path>/\S*ld-linux[^\s]*)\s+\(0x[0-9a-f]+\)$")
_SAMPLE_CONFIG = """\
global
    maxconn 64
defaults
    mode tcp
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend probe
    bind 127.0.0.1:15999
    default_backend probe
backend probe
    option httpchk
    http-check send meth GET uri /v2/ ver HTTP/1.1 hdr Host sea.hub:5000
    default-server check check-ssl verify none inter 1s fall 2 rise 2
    server one 127.0.0.1:5000 tcp-ut 2s
"""


class BundleError(RuntimeError):
    pass


@dataclass(frozen=True)
class Deb:
    path: Path
    version: str
    arch: str
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(*argv: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BundleError(f"{argv[0]} is not installed (the bundle is built on Debian)") from None
    if done.returncode != 0:
        raise BundleError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def deb_of(path: Path) -> Deb:
    fields = _run("dpkg-deb", "-f", str(path), "Package", "Version", "Architecture")
    values = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    if values.get("Package") != "haproxy":
        raise BundleError(f"{path} is not Debian's haproxy package (Package: {values.get('Package')})")
    version = values["Version"].split(":", 1)[-1]
    return Deb(path, version, values["Architecture"], sha256_of(path))


def download(cache: Path, version: str | None = None) -> Deb:
    """``apt-get download haproxy[=VERSION]`` into CACHE (apt's candidate: the version this
    machine's sources offer); an already downloaded .deb of that version is reused."""
    cache.mkdir(parents=True, exist_ok=True)
    spec = f"haproxy={version}" if version else "haproxy"
    if version is None:
        policy = _run("apt-cache", "policy", "haproxy")
        m = re.search(r"Candidate:\s*(\S+)", policy)
        if not m or m.group(1) == "(none)":
            raise BundleError("apt knows no haproxy package (run apt-get update)")
        version = m.group(1)
    for found in sorted(cache.glob("haproxy_*.deb")):
        deb = deb_of(found)
        if deb.version == version.split(":", 1)[-1]:
            return deb
    # apt-get download drops root to _apt, which cannot write the cache: downloads unsandboxed.
    _run("apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", spec, cwd=cache, timeout=300)
    debs = [d for d in map(deb_of, sorted(cache.glob("haproxy_*.deb")))
            if d.version == version.split(":", 1)[-1]]
    if not debs:
        raise BundleError(f"apt-get download {spec} left no .deb in {cache}")
    return debs[0]


def libraries(binary: Path) -> tuple[dict[str, Path], Path]:
    """The shared libraries ``binary`` loads ({name it is asked for: file on this machine}) and
    the dynamic loader, as ``ldd`` resolves them here."""
    out = _run("ldd", str(binary))
    libs: dict[str, Path] = {}
    loader = None
    for line in out.splitlines():
        if "not found" in line:
            raise BundleError(f"ldd {binary}: {line.strip()} (install the library's package)")
        if m := _LDD_LINE.match(line):
            libs[m.group("name")] = Path(m.group("path"))
        elif m := _LDD_LOADER.match(line):
            loader = Path(m.group("path"))
    if loader is None or Path(loader).name != LOADER:
        raise BundleError(f"ldd {binary} names no {LOADER}: the bundle is built for x86_64 glibc")
    return libs, loader


def package_of(path: Path) -> str:
    """``package version`` that installed PATH on this machine (dpkg -S, by the path as dpkg
    records it: /lib is a link to /usr/lib on merged-/usr Debian)."""
    for candidate in (str(path), str(path.resolve()), str(path).replace("/usr/lib/", "/lib/", 1),
                      str(path.resolve()).replace("/usr/lib/", "/lib/", 1)):
        done = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if done.returncode == 0:
            package = done.stdout.split(":", 1)[0].split(",")[0].strip()
            version = _run("dpkg-query", "-W", "-f", "${Version}", package)
            return f"{package} {version}"
    return "unknown"


def _entry(name: str, size: int, mode: int, mtime: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, mode, mtime, kind
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_tarball(files: dict[str, tuple[bytes, int]], mtime: int, target: Path) -> None:
    """FILES ({path in the bundle: (bytes, mode)}) as a gzip'd tar, the same bytes for the same
    files: directories first, then sorted paths; fixed mtime and owner; no name or time in gzip."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files} - {"."})
        for d in dirs:
            tar.addfile(_entry(d, 0, 0o755, mtime, tarfile.DIRTYPE))
        for path in sorted(files):
            data, mode = files[path]
            tar.addfile(_entry(path, len(data), mode, mtime), io.BytesIO(data))
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    os.replace(tmp, target)


def build(deb: Deb, out_dir: Path) -> Path:
    """The bundle of DEB in OUT_DIR; returns the tarball's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="haproxy-bundle-") as tmp:
        root = Path(tmp)
        _run("dpkg-deb", "-x", str(deb.path), str(root))
        binary = root / "usr" / "sbin" / "haproxy"
        if not binary.is_file():
            raise BundleError(f"{deb.path} has no usr/sbin/haproxy")
        libs, loader = libraries(binary)
        mtime = int(binary.stat().st_mtime)
        files: dict[str, tuple[bytes, int]] = {
            "bin/haproxy": (binary.read_bytes(), 0o755),
            "bin/haproxy-entry": (WRAPPER.read_bytes(), 0o755),
            f"lib/{LOADER}": (loader.resolve().read_bytes(), 0o755),
        }
        for name, path in libs.items():
            files[f"lib/{name}"] = (path.resolve().read_bytes(), 0o644)
        copyright_file = root / "usr" / "share" / "doc" / "haproxy" / "copyright"
        if copyright_file.is_file():
            files["doc/haproxy.copyright"] = (copyright_file.read_bytes(), 0o644)
    lines = [f"version {deb.version}", f"arch {deb.arch}", f"deb {deb.path.name}", f"deb_sha256 {deb.sha256}",
             f"loader lib/{LOADER} from {package_of(loader)}"]
    lines += [f"library lib/{name} from {package_of(path)}" for name, path in sorted(libs.items())]
    files["BUNDLE"] = ("\n".join(lines).encode() + b"\n", 0o644)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, (data, _) in sorted(files.items()))
    files["SHA256SUMS"] = (sums.encode(), 0o644)
    target = out_dir / f"haproxy-{deb.version}-{deb.arch}.tar.gz"
    if not TARBALL.fullmatch(target.name):
        raise BundleError(f"{target.name}: the version or the architecture is not one the nodes take "
                          f"(x86_64 only)")
    write_tarball(files, mtime, target)
    return target


def check(tarball: Path, run_haproxy: bool = True) -> str:
    """Unpacks TARBALL, verifies SHA256SUMS, and (RUN_HAPROXY) runs ``haproxy-entry -vv`` and
    ``-c -f`` on a sample config with LD_LIBRARY_PATH unset; returns the ``-vv`` version line."""
    with tempfile.TemporaryDirectory(prefix="haproxy-bundle-check-") as tmp:
        root = Path(tmp)
        with tarfile.open(tarball) as tar:
            tar.extractall(root, filter="data")
        _run("sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS", cwd=root)
        if not run_haproxy:
            return ""
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        env["PATH"] = "/usr/bin:/bin"  # no system haproxy on the way
        version = _run(str(root / "bin" / "haproxy-entry"), "-vv", env=env, timeout=30)
        (root / "sample.cfg").write_text(_SAMPLE_CONFIG)
        _run(str(root / "bin" / "haproxy-entry"), "-c", "-f", str(root / "sample.cfg"), env=env, timeout=30)
        return version.splitlines()[0] if version else ""


def ensure(cache: Path = CACHE_DIR, version: str | None = None) -> tuple[Deb, Path]:
    """The bundle of Debian's haproxy (VERSION, else apt's candidate), built and checked unless
    the cache holds it already."""
    deb = download(cache, version)
    target = cache / f"haproxy-{deb.version}-{deb.arch}.tar.gz"
    if not target.is_file():
        checked(build(deb, cache))
    return deb, target


def checked(tarball: Path) -> str:
    """``check``; a bundle that fails it is removed (never left for the program to ship)."""
    try:
        return check(tarball)
    except BundleError:
        tarball.unlink(missing_ok=True)
        raise


def find_bundle(directory: Path = CACHE_DIR) -> Path | None:
    """The one bundle in DIRECTORY (the default of node_entry.bundle); None when there is none.
    Several: the newest by name is not a choice to make for the operator."""
    found = sorted(p for p in directory.glob("haproxy-*.tar.gz") if TARBALL.fullmatch(p.name))
    if len(found) > 1:
        raise BundleError(f"{len(found)} bundles in {directory} ({', '.join(p.name for p in found)}): "
                          f"set registry.local_registry.node_entry.bundle to one")
    return found[0] if found else None


BUNDLE_FIELD = "registry.local_registry.node_entry.bundle"


def shipped_bundle(entry, cache: Path = CACHE_DIR) -> tuple[Path, str] | None:
    """(path, sha256) of the bundle node_entry ENTRY ships (haproxy: auto or bundle; None for
    system or without node_entry): node_entry.bundle, else the one `make haproxy-bundle` wrote in
    CACHE. None there, several, or an unreadable file: a ConfigError naming the field, raised
    before any host is touched."""
    from config.errors import ConfigError

    if entry is None or str(entry.haproxy) == "system":
        return None
    if entry.bundle is not None:
        path = Path(entry.bundle).expanduser().absolute()
    else:
        try:
            found = find_bundle(cache)
        except BundleError as exc:
            raise ConfigError([(BUNDLE_FIELD, str(exc))]) from None
        if found is None:
            raise ConfigError([(BUNDLE_FIELD, f"is not set and {cache} holds no bundle (needed by "
                                              f"node_entry.haproxy: {entry.haproxy}): run `make "
                                              f"haproxy-bundle` (Debian's haproxy with its libraries, "
                                              f"for nodes without one), or set node_entry.haproxy: system")])
        path = found
    try:
        return path, sha256_of(path)
    except OSError as exc:
        raise ConfigError([(BUNDLE_FIELD, f"cannot read {path}: {exc.strerror}")]) from None


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", dest="deb_version", default=None,
                        help="Debian version of haproxy to download (default: apt's candidate)")
    parser.add_argument("--deb", type=Path, default=None,
                        help="build from this haproxy .deb instead of downloading one")
    parser.add_argument("--out", type=Path, default=CACHE_DIR,
                        help=f"where the .deb and the tarball go (default: {CACHE_DIR})")


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    try:
        if args.deb is not None:
            deb = deb_of(args.deb)
            tarball = build(deb, args.out)
        else:
            deb, tarball = ensure(args.out, args.deb_version)
        line = checked(tarball)
    except BundleError as exc:
        raise CliError(str(exc), EXIT_REFUSED) from None
    print(f"{tarball}\nsha256 {sha256_of(tarball)}\ndeb {deb.path.name} sha256 {deb.sha256}\n{line}")
    return EXIT_OK

