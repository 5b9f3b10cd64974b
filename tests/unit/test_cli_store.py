"""cli/store.py: `recover`'s read-only check of the image store, through skopeo. A stand-in
`skopeo` first on PATH serves manifests from a directory by digest (as a registry does for
`docker://STORE/REPO@DIGEST`) and records how it was called."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest

from cli.store import check_store
from config.image_store import ImageStoreConfig, StoredImage, parse_ref
from test_config import PKI

CLUSTER_IMG, APP_IMG = "sha256:" + "cd" * 32, "sha256:" + "ab" * 32
STORE_PASSWORD = "st0re-Pull-s3cret"

FAKE_SKOPEO = r"""#!/bin/sh
here=$(dirname "$0")
printf '%s\n' "$*" >>"$here/calls"
prev=""
for a; do
  if [ "$prev" = --authfile ]; then cp "$a" "$here/auth.json"; stat -c %a "$a" >"$here/auth.mode"; fi
  if [ "$prev" = --cert-dir ]; then cat "$a/ca.crt" >"$here/ca.seen"; fi
  prev=$a
  last=$a
done
file="$here/../manifests/${last##*@sha256:}"
if [ ! -f "$file" ]; then
  echo 'time="2026-12-02T11:00:00Z" level=fatal msg="Error parsing image name: manifest unknown"' >&2
  exit 1
fi
cat "$file"
"""


def blob(name: str, size: int) -> dict:
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:" + hashlib.sha256(name.encode()).hexdigest(), "size": size}


class Store:
    """The manifests the stand-in serves, and what it saw."""

    def __init__(self, root: Path):
        self.root = root
        (root / "manifests").mkdir(parents=True)
        (root / "bin").mkdir()
        skopeo = root / "bin" / "skopeo"
        skopeo.write_text(FAKE_SKOPEO)
        skopeo.chmod(0o755)

    def manifest(self, config: dict, *layers: dict) -> str:
        """Serves an image manifest; returns its digest."""
        return self.serve({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": list(layers)})

    def index(self, *digests: str) -> str:
        return self.serve({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": [{"digest": d, "size": 1} for d in digests]})

    def serve(self, doc: dict, as_digest: str | None = None) -> str:
        raw = json.dumps(doc).encode()
        digest = as_digest or "sha256:" + hashlib.sha256(raw).hexdigest()
        (self.root / "manifests" / digest.removeprefix("sha256:")).write_bytes(raw)
        return digest

    @property
    def calls(self) -> list[str]:
        path = self.root / "bin" / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def seen(self, name: str) -> str:
        return (self.root / "bin" / name).read_text()


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    fake = Store(tmp_path / "fake")
    monkeypatch.setenv("PATH", f"{tmp_path / 'fake' / 'bin'}:/usr/bin:/bin")
    return fake


def config(**fields) -> ImageStoreConfig:
    return ImageStoreConfig.model_validate({"registry": "store.example.com:5443",
                                            "images": {CLUSTER_IMG: ["placeholder:v1@sha256:" + "0" * 64]},
                                            **fields})


def images(*groups: list[str]) -> list[StoredImage]:
    """One StoredImage per group of refs: the cluster image, then the app image."""
    return [StoredImage(image_id, tuple(parse_ref(r) for r in refs))
            for image_id, refs in zip((CLUSTER_IMG, APP_IMG), groups)]


def test_every_ref_served_with_its_digest_and_the_bytes_of_its_blobs(store, tmp_path):
    cfg = blob("cfg0", 100)
    base = store.manifest(cfg, blob("layer-base", 1000), blob("layer-app", 50))
    pause = store.manifest(blob("cfg1", 10), blob("layer-pause", 7))
    result = check_store(config(), None, images([f"sealer/cluster-base:v1@{base}", f"library/pause:3.9@{pause}"]), tmp_path)
    assert (result.registry, result.refs, result.served, result.problems) == ("store.example.com:5443", 2, 2, [])
    assert result.bytes == 100 + 1000 + 50 + 10 + 7
    assert sorted(call.rsplit(" ", 1)[1] for call in store.calls) == sorted([
        f"docker://store.example.com:5443/sealer/cluster-base@{base}",
        f"docker://store.example.com:5443/library/pause@{pause}"])


def test_a_blob_two_images_share_is_counted_once(store, tmp_path):
    """The store keeps one copy of a blob per digest, and so will master0's registry."""
    shared = blob("layer-shared", 5000)
    one = store.manifest(blob("cfg-a", 1), shared, blob("layer-a", 20))
    two = store.manifest(blob("cfg-b", 2), shared, blob("layer-b", 30))
    result = check_store(config(), None, images([f"a/one:v1@{one}"], [f"a/two:v1@{two}"]), tmp_path)
    assert (result.served, result.problems) == (2, [])
    assert result.bytes == 5000 + 1 + 20 + 2 + 30


def test_an_index_counts_the_blobs_of_every_platform_once(store, tmp_path):
    shared = blob("layer-shared", 400)
    amd64 = store.manifest(blob("cfg-amd64", 3), shared, blob("layer-amd64", 100))
    arm64 = store.manifest(blob("cfg-arm64", 4), shared, blob("layer-arm64", 200))
    index = store.index(amd64, arm64)
    result = check_store(config(), None, images([f"library/app:v1@{index}"]), tmp_path)
    assert (result.refs, result.served, result.problems) == (1, 1, [])
    assert result.bytes == 400 + 3 + 100 + 4 + 200


def test_a_ref_listed_twice_is_asked_for_once(store, tmp_path):
    digest = store.manifest(blob("cfg", 1), blob("layer", 2))
    ref = f"library/app:v1@{digest}"
    result = check_store(config(), None, images([ref], [ref]), tmp_path)
    assert (result.refs, result.served, result.bytes, len(store.calls)) == (1, 1, 3, 1)


def test_a_manifest_with_another_digest_is_a_problem(store, tmp_path):
    """The store answers for the pinned digest with other bytes (a moved or corrupt manifest):
    the fill would fail on it, so the check names the ref and counts it unserved."""
    good = store.manifest(blob("cfg", 1), blob("layer", 2))
    pinned = "sha256:" + "e" * 64
    store.serve({"schemaVersion": 2, "config": blob("other", 9), "layers": []}, as_digest=pinned)
    ref = f"library/moved:v1@{pinned}"
    result = check_store(config(), None, images([f"library/app:v1@{good}", ref]), tmp_path)
    assert (result.refs, result.served) == (2, 1)
    assert result.problems == [f"{ref}: the store serves another manifest than {pinned}"]
    assert result.bytes == 3  # only what is served


def test_a_ref_the_store_does_not_serve_is_a_problem_with_skopeo_s_last_line(store, tmp_path):
    missing = "library/gone:v1@sha256:" + "f" * 64
    result = check_store(config(), None, images([missing]), tmp_path)
    assert (result.served, result.bytes) == (0, 0)
    [problem] = result.problems
    assert problem.startswith(f"{missing}: ") and "manifest unknown" in problem


def test_the_login_goes_in_a_0600_auth_file_never_on_the_command_line(store, tmp_path):
    digest = store.manifest(blob("cfg", 1), blob("layer", 2))
    cfg = config(username="reader", password=STORE_PASSWORD)
    result = check_store(cfg, STORE_PASSWORD, images([f"library/app:v1@{digest}"]), tmp_path)
    assert result.problems == []
    auth = json.loads(store.seen("auth.json"))
    assert auth == {"auths": {"store.example.com:5443": {
        "auth": base64.b64encode(f"reader:{STORE_PASSWORD}".encode()).decode()}}}
    assert store.seen("auth.mode").strip() == "600"
    assert not any(STORE_PASSWORD in call or "reader" in call for call in store.calls)
    # The private temp dir is gone after the check: no auth file is left behind.
    authfile = next(c.split("--authfile ", 1)[1].split(" ", 1)[0] for c in store.calls)
    assert not Path(authfile).exists()


def test_an_anonymous_store_gets_an_empty_auth_file(store, tmp_path):
    digest = store.manifest(blob("cfg", 1), blob("layer", 2))
    check_store(config(), None, images([f"library/app:v1@{digest}"]), tmp_path)
    assert json.loads(store.seen("auth.json")) == {"auths": {}}


def test_the_ca_file_relative_to_the_project_is_the_store_s_cert_dir(store, tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "store-ca.pem").write_text(PKI.ca_cert)
    digest = store.manifest(blob("cfg", 1), blob("layer", 2))
    result = check_store(config(ca_file="store-ca.pem"), None, images([f"library/app:v1@{digest}"]),
                         tmp_path / "project")
    assert result.problems == []
    assert store.seen("ca.seen") == PKI.ca_cert
    assert "--cert-dir " in store.calls[0]


def test_without_a_ca_file_the_system_trust_is_used(store, tmp_path):
    digest = store.manifest(blob("cfg", 1), blob("layer", 2))
    check_store(config(), None, images([f"library/app:v1@{digest}"]), tmp_path)
    assert "--cert-dir" not in store.calls[0]
    assert not (store.root / "bin" / "ca.seen").exists()


def test_no_skopeo_is_one_problem_per_ref_not_a_crash(tmp_path, monkeypatch):
    """Without skopeo on PATH, recover's preflight says so instead of a traceback."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    ref = "library/app:v1@sha256:" + "1" * 64
    result = check_store(config(), None, images([ref]), tmp_path)
    assert result.served == 0 and len(result.problems) == 1
    assert result.problems[0].startswith(f"{ref}: ") and "skopeo" in result.problems[0]


def test_the_temp_dir_is_private(store, tmp_path, monkeypatch):
    """The auth file's directory is the check's own (mkdtemp: 0700)."""
    seen = {}
    import cli.store as cs
    real = cs.StoreReader.__enter__

    def spy(self):
        entered = real(self)
        seen["mode"] = stat.S_IMODE(Path(self._tmp.name).stat().st_mode)
        return entered

    monkeypatch.setattr(cs.StoreReader, "__enter__", spy)
    digest = store.manifest(blob("cfg", 1), blob("layer", 2))
    check_store(config(), None, images([f"library/app:v1@{digest}"]), tmp_path)
    assert seen["mode"] == 0o700


@pytest.mark.parametrize("doc", [
    {"schemaVersion": 2, "layers": [{"digest": "sha256:" + "1" * 64, "size": None}]},
    {"schemaVersion": 2, "manifests": [{"size": 1}]},
    {"schemaVersion": 2, "manifests": "sha256:" + "1" * 64},
])
def test_a_manifest_the_check_cannot_read_is_a_problem_not_a_crash(store, tmp_path, doc):
    digest = store.serve(doc)
    ref = f"library/odd:v1@{digest}"
    result = check_store(config(), None, images([ref]), tmp_path)
    assert result.served == 0 and len(result.problems) == 1 and result.problems[0].startswith(f"{ref}: ")


def test_an_unreadable_ca_file_is_a_problem_and_the_store_is_not_asked(store, tmp_path):
    """recover reads the config without checking its files: a ca_file gone since is reported."""
    result = check_store(config(ca_file="gone.pem"), None, images(["library/app:v1@sha256:" + "1" * 64]), tmp_path)
    assert (result.served, result.bytes) == (0, 0)
    assert result.problems == ["cannot read apps.image_store.ca_file gone.pem: No such file or directory"]
    assert store.calls == []
