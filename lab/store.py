"""The lab's image store registry: the operator's store server, played by a real `docker-registry`.

It serves the union of every image `lab.images` generated into a store (`<store>/<hex>/docker/
registry/v2` + `<hex>/image.json`) on `<GATEWAY>:5443` in the root namespace, where the machine
that runs pulumi and every lab host (through the bridge) reach it. HTTPS with a CA of its own (not
the cluster's), htpasswd (bcrypt) auth for one reader, read-only storage.

State under `<lab state>/store-registry/`:
- `ca/store-ca.crt` (+ `pki/ca.key`, `server/server.{crt,key}`): made once, kept across `down`
  like the stack's PKI (`down --purge` removes them). `ca/` holds only the CA certificate, so it
  can be given to skopeo as `--cert-dir` (a `.key` there would be taken for a client key);
- `roots/<fingerprint>/docker/registry/v2`: the union tree, hardlinks of the store's files (no
  copy of the data); `root` is a symlink to the current one, swapped atomically when the set of
  images changes. The registry resolves paths per request and runs without a cache, so a rebuild
  needs no restart;
- `registry.yml`, `htpasswd`, `registry.pid`, `registry.log`.

The registry is read-only (`maintenance.readonly`): a hardlinked tree shares its inodes with the
store, so nothing may write into it.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

from lab import tls
from lab.hosts import BRIDGE, GATEWAY, LabError, _alive, _signal, _wait, sh

PORT = 5443
ADDRESS = f"{GATEWAY}:{PORT}"
USERNAME = "store-reader"
STORE_PASSWORD = "lab-Store-Passw0rd"  # lab constant, like lab.stack.PASSWORD
SECRET_PATH = "apps.image_store.password"
SECRETS = {SECRET_PATH: STORE_PASSWORD}
DIRNAME = "store-registry"
_LAYOUT = "store-registry union v1"  # part of the fingerprint: a new layout rebuilds the tree
_IMAGE_DIR = re.compile(r"[0-9a-f]{64}")
_START_TIMEOUT_S = 15


@dataclasses.dataclass
class StoreRegistry:
    """A running store registry and what a stack needs to use it."""

    registry: str                   # host:port
    username: str
    ca_file: Path                   # PEM of the store's own CA
    cert_dir: Path                  # a directory holding only ca_file (skopeo --cert-dir)
    images: dict[str, list[str]]    # image id -> ["repo:tag@sha256:...", ...]
    pid: int
    root: Path                      # the registry's storage root (the union tree)

    @property
    def password(self) -> str:
        return STORE_PASSWORD

    @property
    def secrets(self) -> dict[str, str]:
        """Secret stack config paths -> values (`SECRETS`)."""
        return dict(SECRETS)

    def config(self) -> dict:
        """The `apps.image_store` block of the stack config, without the password (a secret)."""
        return {"registry": self.registry, "username": self.username,
                "ca_file": str(self.ca_file), "images": self.images}

    @property
    def refs(self) -> list[str]:
        return [ref for refs in self.images.values() for ref in refs]


@dataclasses.dataclass(frozen=True)
class _Paths:
    base: Path

    ca_dir = property(lambda self: self.base / "ca")
    ca_file = property(lambda self: self.base / "ca" / "store-ca.crt")
    ca_key = property(lambda self: self.base / "pki" / "ca.key")
    server_crt = property(lambda self: self.base / "server" / "server.crt")
    server_key = property(lambda self: self.base / "server" / "server.key")
    roots = property(lambda self: self.base / "roots")
    root = property(lambda self: self.base / "root")
    root_json = property(lambda self: self.base / "root.json")
    config = property(lambda self: self.base / "registry.yml")
    htpasswd = property(lambda self: self.base / "htpasswd")
    pid = property(lambda self: self.base / "registry.pid")
    log = property(lambda self: self.base / "registry.log")


def _paths(state: Path | os.PathLike) -> _Paths:
    state = getattr(state, "state", state)  # a Lab or its state dir
    return _Paths(Path(state).resolve() / DIRNAME)


def _default_store(state) -> Path:
    return Path(getattr(state, "state", state)).resolve() / "images"


# ------------------------------------------------------------------------------ images


def _image_dirs(store: Path) -> list[Path]:
    """The store's finished images (a `.partial-*` dir is a generator still at work), oldest
    first: where two images tag the same repository:tag, the newest one's tag wins."""
    if not store.is_dir():
        return []
    dirs = [d for d in store.iterdir()
            if _IMAGE_DIR.fullmatch(d.name) and (d / "image.json").is_file()
            and (d / "docker/registry/v2").is_dir()]
    return sorted(dirs, key=lambda d: ((d / "image.json").stat().st_mtime_ns, d.name))


def images_map(store: Path | os.PathLike) -> dict[str, list[str]]:
    """Every image of the store -> its pinned refs (`repository:tag@digest`), from image.json."""
    out = {}
    for d in _image_dirs(Path(store)):
        doc = json.loads((d / "image.json").read_text())
        out[doc["image_id"]] = [f"{r['repository']}:{r['tag']}@{r['digest']}" for r in doc["refs"]]
    return dict(sorted(out.items()))


def _fingerprint(store: Path, dirs: list[Path]) -> str:
    h = hashlib.sha256(f"{_LAYOUT}\n{store}\n".encode())
    for d in dirs:
        st = (d / "image.json").stat()
        h.update(f"{d.name} {st.st_mtime_ns} {st.st_size}\n".encode())
    return h.hexdigest()[:16]


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno != 18:  # EXDEV: a store on another filesystem is copied instead
            raise
        shutil.copy2(src, dst)


def _build_union(dirs: list[Path], dest: Path) -> int:
    """Hardlink every image's registry tree into `dest`; returns the number of files. Blobs and
    repository links of the same digest are the same bytes in every image: the first one stays.
    Tag links (`_manifests/tags/`) are replaced by later (newer) images."""
    count = 0
    for d in dirs:
        src_root = d / "docker"
        for dirpath, _dirnames, filenames in os.walk(src_root):
            rel = Path(dirpath).relative_to(d)
            target = dest / rel
            target.mkdir(parents=True, exist_ok=True)
            for name in filenames:
                dst = target / name
                if dst.exists():
                    if "/_manifests/tags/" not in f"/{rel}/":
                        continue
                    dst.unlink()  # never write into it: it is a hardlink of the store's file
                _link(Path(dirpath) / name, dst)
                count += 1
    return count


def _ensure_root(p: _Paths, store: Path) -> tuple[str, bool]:
    """(fingerprint, rebuilt?): the union tree of the store's current images under `root`."""
    dirs = _image_dirs(store)
    if not dirs:
        raise LabError(f"no generated image in {store}: run `python -m lab images` first")
    fp = _fingerprint(store, dirs)
    current = p.roots / fp
    if p.root.is_symlink() and os.readlink(p.root) == f"roots/{fp}" and current.is_dir():
        return fp, False
    if not current.is_dir():
        partial = p.roots / f".{fp}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        files = _build_union(dirs, partial)
        partial.rename(current)
    else:
        files = None
    tmp = p.base / ".root.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(f"roots/{fp}")
    os.replace(tmp, p.root)
    p.root_json.write_text(json.dumps({
        "fingerprint": fp, "store": str(store), "images": [d.name for d in dirs],
        "files": files}, indent=2) + "\n")
    for old in p.roots.iterdir():
        if old.name != fp:
            shutil.rmtree(old, ignore_errors=True)
    return fp, True


# ------------------------------------------------------------------------------ PKI, auth, config


def _ensure_pki(p: _Paths) -> bool:
    """The store's CA (made once) and its server certificate for GATEWAY and 127.0.0.1. True when
    something was (re)made."""
    made = False
    if not (p.ca_file.exists() and p.ca_key.exists()):
        cert, key = tls.make_ca("sealer-registry lab store CA")
        tls.write_private(p.ca_key, key.decode())
        p.ca_dir.mkdir(parents=True, exist_ok=True)
        p.ca_file.write_bytes(cert)
        p.server_crt.unlink(missing_ok=True)
        made = True
    ips = {GATEWAY, "127.0.0.1"}
    if p.server_crt.exists() and p.server_key.exists() \
            and tls.cert_ips(p.server_crt.read_bytes()) == ips:
        return made
    cert, key = tls.issue_server(p.ca_file.read_bytes(), p.ca_key.read_bytes(), GATEWAY, ips)
    tls.write_private(p.server_key, key.decode())
    p.server_crt.write_bytes(cert)
    return True


def _ensure_htpasswd(p: _Paths) -> bool:
    import bcrypt
    try:
        user, _, hashed = p.htpasswd.read_text().strip().partition(":")
        if user == USERNAME and bcrypt.checkpw(STORE_PASSWORD.encode(), hashed.encode()):
            return False
    except (OSError, ValueError):
        pass
    hashed = bcrypt.hashpw(STORE_PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    tls.write_private(p.htpasswd, f"{USERNAME}:{hashed}\n")
    return True


def _config_text(p: _Paths) -> str:
    return f"""\
# lab store registry, generated by lab/store.py
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {p.root}
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: true
http:
  addr: {ADDRESS}
  secret: lab-store-registry
  tls:
    certificate: {p.server_crt}
    key: {p.server_key}
auth:
  htpasswd:
    realm: lab-store
    path: {p.htpasswd}
"""


def _ensure_config(p: _Paths) -> bool:
    text = _config_text(p)
    if p.config.exists() and p.config.read_text() == text:
        return False
    p.config.write_text(text)
    return True


# ------------------------------------------------------------------------------ process


def _argv(p: _Paths) -> list[str]:
    return ["docker-registry", "serve", str(p.config)]


def _pids(p: _Paths) -> list[int]:
    """Every live registry process of this state dir: the pid file's and any whose record was lost
    (a crash between start and writing the pid file)."""
    want = ("\0".join(_argv(p)) + "\0").encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == want and _alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                pass
    return sorted(found)


def _pid(p: _Paths) -> int | None:
    try:
        pid = int(p.pid.read_text())
    except (OSError, ValueError):
        return None
    return pid if pid in _pids(p) else None


def probe(ca_file: Path | None = None, timeout: float = 2) -> int | None:
    """HTTP status of an anonymous GET /v2/ (401 when serving), None when nothing answers over
    TLS that verifies against the store CA (`ca_file`; default: none, no verification), or when
    the lab's bridge does not hold the gateway address (the packet would leave the machine)."""
    if not _gateway_up():
        return None
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not ca_file:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(GATEWAY, PORT, timeout=timeout, context=ctx)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _gateway_up() -> bool:
    p = sh("ip", "-4", "-o", "addr", "show", "dev", BRIDGE, check=False)
    return p.returncode == 0 and f" {GATEWAY}/" in p.stdout


def _start(p: _Paths) -> int:
    with open(p.log, "ab") as log:
        proc = subprocess.Popen(_argv(p), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                cwd="/")
    p.pid.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if probe(p.ca_file) == 401:
            return proc.pid
        time.sleep(0.05)
    stop_process(p)
    tail = p.log.read_text(errors="replace")[-2000:] if p.log.exists() else ""
    raise LabError(f"store registry did not come up on {ADDRESS}: {tail}")


def stop_process(p: _Paths, timeout: float = 10) -> bool:
    pids = _pids(p)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    for pid in pids:
        gone = lambda pid=pid: not _alive(pid)  # noqa: E731
        if not _wait(gone, timeout, "store registry to stop", raise_=False):
            _signal(pid, signal.SIGKILL)
            _wait(gone, 5, "store registry to die")
        try:
            os.waitpid(pid, os.WNOHANG)  # ours when started by this process: no zombie
        except ChildProcessError:
            pass
    p.pid.unlink(missing_ok=True)
    return bool(pids)


# ------------------------------------------------------------------------------ API


def ensure(state, store: Path | os.PathLike | None = None) -> StoreRegistry:
    """Serve `store` (default `<state>/images`) on ADDRESS; `state` is a Lab or its state dir.
    Idempotent: when nothing changed, nothing is rebuilt or restarted. A changed set of images
    swaps the union tree under the running registry; changed PKI, htpasswd or config restart it.
    Needs the lab's bridge (`python -m lab up`)."""
    p = _paths(state)
    store = Path(store).resolve() if store else _default_store(state)
    if not _gateway_up():
        raise LabError(f"{BRIDGE} has no {GATEWAY}: bring the lab up first (`python -m lab up`)")
    p.base.mkdir(parents=True, exist_ok=True)
    _ensure_root(p, store)
    changed = _ensure_pki(p)
    changed = _ensure_htpasswd(p) or changed
    changed = _ensure_config(p) or changed
    pid = _pid(p)
    if pid is not None and (changed or probe(p.ca_file) != 401):
        stop_process(p)
        pid = None
    if pid is None:
        stop_process(p)  # a lost one (no pid file) would hold the port
        pid = _start(p)
    return StoreRegistry(registry=ADDRESS, username=USERNAME, ca_file=p.ca_file,
                         cert_dir=p.ca_dir, images=images_map(store), pid=pid, root=p.root)


def config_for(state, store: Path | os.PathLike | None = None) -> dict:
    """The `apps.image_store` block for `store` served by this lab, without starting anything
    (what `ensure(...).config()` returns once the registry serves it; the password is `SECRETS`)."""
    store = Path(store).resolve() if store else _default_store(state)
    return {"registry": ADDRESS, "username": USERNAME, "ca_file": str(_paths(state).ca_file),
            "images": images_map(store)}


def store_config(state, store: Path | os.PathLike | None = None) -> dict:
    """`ensure(state, store).config()`: the stack's `apps.image_store` block without the password
    (give `SECRETS` to the engine as secrets)."""
    return ensure(state, store).config()


def stop(state, clean: bool = False) -> bool:
    """Stop the store registry (True if one ran). `clean` also removes the union tree, config,
    htpasswd, pid and log, keeping the CA and server certificate (as `Lab.down` keeps the
    stack's PKI)."""
    p = _paths(state)
    if not p.base.exists():
        return False
    stopped = stop_process(p)
    if clean:
        for path in (p.roots, p.root, p.root_json, p.config, p.htpasswd, p.log):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return stopped


def status(state) -> dict:
    p = _paths(state)
    pid = _pid(p) if p.base.exists() else None
    try:
        root = json.loads(p.root_json.read_text())
    except (OSError, ValueError):
        root = {}
    return {"registry": ADDRESS, "running": pid is not None, "pid": pid,
            "anonymous_v2": probe(p.ca_file) if pid is not None else None,
            "ca_file": str(p.ca_file) if p.ca_file.exists() else None,
            "store": root.get("store"), "images": len(root.get("images", [])),
            "fingerprint": root.get("fingerprint"), "log": str(p.log)}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("action", choices=("up", "down", "status"))
    ap.add_argument("--store", type=Path, help="image store to serve (default <state>/images)")


def main(a: argparse.Namespace, lab) -> dict:
    """up: the `apps.image_store` block (the password goes in as secret `SECRET_PATH`)."""
    if a.action == "up":
        return ensure(lab, a.store).config()
    if a.action == "down":
        return {"stopped": stop(lab)}
    return status(lab)
