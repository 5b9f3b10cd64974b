"""The image store as `recover` checks it before it changes anything: the store answers with
the configured login and TLS, serves every pinned ref with its digest, and how many bytes the
images hold (the new master0 needs that much room). Read-only, through skopeo (as the fill step:
scripts/fill-from-store.sh); the password only in a 0600 auth file of a private temp dir.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from config.image_store import ImageRef, ImageStoreConfig, StoredImage

TIMEOUT_S = 20
_POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'


@dataclass
class StoreCheck:
    registry: str
    refs: int = 0
    served: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


class StoreReader:
    """skopeo reads of the store, with a private temp dir for the policy, the 0600 auth file
    and the CA (a context manager)."""

    def __init__(self, store: ImageStoreConfig, password: str | None, project_dir: Path):
        self.store, self.password, self.project_dir = store, password, project_dir
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.flags: list[str] = []
        self.inspect: list[str] = []

    def __enter__(self) -> "StoreReader":
        self._tmp = tempfile.TemporaryDirectory(prefix="sealer-store-")
        work = Path(self._tmp.name)
        store = self.store
        (work / "policy.json").write_text(_POLICY)
        auths = {}
        if store.username is not None and self.password is not None:
            auths[store.registry] = {"auth": base64.b64encode(f"{store.username}:{self.password}".encode()).decode()}
        auth = work / "auth.json"
        auth.touch(mode=0o600)
        auth.write_text(json.dumps({"auths": auths}))
        self.flags = ["--policy", str(work / "policy.json"), "--command-timeout", f"{TIMEOUT_S}s"]
        self.inspect = ["--authfile", str(auth)]
        if store.ca_file:
            certs = work / "certs"
            certs.mkdir(mode=0o700)
            ca = Path(store.ca_file).expanduser()
            (certs / "ca.crt").write_bytes((ca if ca.is_absolute() else self.project_dir / ca).read_bytes())
            self.inspect += ["--cert-dir", str(certs)]
        return self

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def _manifest(self, reference: str) -> bytes:
        try:
            out = subprocess.run(
                ["skopeo", *self.flags, "inspect", "--raw", *self.inspect,
                 f"docker://{self.store.registry}/{reference}"],
                capture_output=True, timeout=TIMEOUT_S + 5)
        except OSError as exc:  # no skopeo here: each ref says so instead of a traceback
            raise RuntimeError(f"cannot run skopeo (it reads the image store; install it): "
                               f"{exc.strerror or exc}") from None
        if out.returncode != 0:
            lines = out.stderr.decode(errors="replace").strip().splitlines() or [f"exit {out.returncode}"]
            raise RuntimeError(lines[-1][:300])
        return out.stdout

    def raw(self, repository: str, digest: str) -> bytes:
        """The manifest of REPOSITORY@DIGEST; it must hash to DIGEST."""
        data = self._manifest(f"{repository}@{digest}")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RuntimeError(f"the store serves another manifest than {digest}")
        return data

    def digest(self, repository: str, tag: str) -> str:
        """The digest of the manifest (or index) the store serves for REPOSITORY:TAG now."""
        return "sha256:" + hashlib.sha256(self._manifest(f"{repository}:{tag}")).hexdigest()


def _ref_blobs(skopeo: StoreReader, ref: ImageRef) -> dict[str, int]:
    """Size of each blob (config, layers) of the ref, of every manifest of an index."""
    doc = json.loads(skopeo.raw(ref.repository, ref.digest))
    blobs: dict[str, int] = {}
    if "manifests" in doc:
        for m in doc["manifests"]:
            blobs |= _ref_blobs(skopeo, ImageRef(ref.repository, ref.tag, m["digest"]))
        return blobs
    for blob in [doc.get("config", {}), *doc.get("layers", [])]:
        if "digest" in blob:
            blobs[blob["digest"]] = int(blob.get("size", 0))
    return blobs


def check_store(store: ImageStoreConfig, password: str | None, images: list[StoredImage],
                project_dir: Path) -> StoreCheck:
    """Asks the store for every ref (4 at a time); each ref it cannot serve is one problem."""
    refs = list(dict.fromkeys(ref for img in images for ref in img.refs))
    result = StoreCheck(store.registry, refs=len(refs))
    reader = StoreReader(store, password, project_dir)
    try:
        skopeo = reader.__enter__()
    except OSError as exc:  # recover loads the config without checking its files
        reader.__exit__(None, None, None)
        result.problems.append(f"cannot read apps.image_store.ca_file {store.ca_file}: "
                               f"{exc.strerror or exc}")
        return result
    try:
        def one(ref: ImageRef) -> tuple[ImageRef, dict[str, int] | str]:
            try:
                return ref, _ref_blobs(skopeo, ref)
            except (RuntimeError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired) as exc:
                return ref, str(exc) or type(exc).__name__

        blobs: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for ref, outcome in pool.map(one, refs):
                if isinstance(outcome, dict):
                    result.served += 1
                    blobs |= outcome
                else:
                    result.problems.append(f"{ref}: {outcome}")
    finally:
        reader.__exit__(None, None, None)
    result.bytes = sum(blobs.values())  # a blob two images share is stored once
    return result
