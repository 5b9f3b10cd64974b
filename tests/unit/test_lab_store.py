"""lab/store.py's union tree and image map, on fake image trees (no registry process): what the
store registry serves is every finished image of the store, hardlinked, newest tag winning."""
from __future__ import annotations

import json
import os
import time

import pytest

from lab import store
from lab.hosts import LabError

DIGEST = "sha256:" + "d" * 64


def fake_image(root, hexid: str, refs: list[tuple[str, str, str]], blobs: dict[str, bytes]):
    """A store image dir as lab.images leaves it: registry tree + image.json."""
    d = root / hexid
    v2 = d / "docker/registry/v2"
    for digest, data in blobs.items():
        h = digest.split(":")[1]
        (v2 / f"blobs/sha256/{h[:2]}/{h}").mkdir(parents=True, exist_ok=True)
        (v2 / f"blobs/sha256/{h[:2]}/{h}/data").write_bytes(data)
    for repo, tag, digest in refs:
        link = v2 / f"repositories/{repo}/_manifests/tags/{tag}/current/link"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(digest)
    (d / "image.json").write_text(json.dumps({
        "image_id": f"sha256:{hexid}",
        "refs": [{"repository": r, "tag": t, "digest": g} for r, t, g in refs]}))
    return d


@pytest.fixture
def paths(tmp_path):
    return store._paths(tmp_path / "state")


def test_images_map_pins_every_ref_and_skips_unfinished(tmp_path):
    fake_image(tmp_path, "a" * 64, [("library/app0", "v1", DIGEST)], {})
    (tmp_path / ".partial-1-app1").mkdir()
    (tmp_path / ("b" * 64)).mkdir()  # no image.json: not finished
    assert store.images_map(tmp_path) == {f"sha256:{'a' * 64}": [f"library/app0:v1@{DIGEST}"]}


def test_union_is_hardlinks_and_newest_tag_wins(tmp_path, paths):
    shared = "sha256:" + "1" * 64
    old = fake_image(tmp_path, "a" * 64, [("library/app", "v1", "sha256:" + "2" * 64)],
                     {shared: b"shared"})
    time.sleep(0.01)
    fake_image(tmp_path, "b" * 64, [("library/app", "v1", "sha256:" + "3" * 64)],
               {shared: b"shared"})
    paths.base.mkdir(parents=True)
    fp, rebuilt = store._ensure_root(paths, tmp_path)
    v2 = paths.root / "docker/registry/v2"
    assert rebuilt and os.readlink(paths.root) == f"roots/{fp}"
    assert (v2 / "repositories/library/app/_manifests/tags/v1/current/link").read_text() \
        == "sha256:" + "3" * 64
    blob = f"blobs/sha256/11/{'1' * 64}/data"
    assert (v2 / blob).stat().st_ino == (old / "docker/registry/v2" / blob).stat().st_ino
    # The replaced tag link was unlinked, not written into: the older image is intact.
    assert (old / "docker/registry/v2/repositories/library/app/_manifests/tags/v1/current/link"
            ).read_text() == "sha256:" + "2" * 64


def test_unchanged_store_is_not_rebuilt_and_a_new_image_is(tmp_path, paths):
    fake_image(tmp_path, "a" * 64, [("library/app0", "v1", DIGEST)], {})
    paths.base.mkdir(parents=True)
    fp, _ = store._ensure_root(paths, tmp_path)
    assert store._ensure_root(paths, tmp_path) == (fp, False)
    fake_image(tmp_path, "c" * 64, [("library/app1", "v1", DIGEST)], {})
    fp2, rebuilt = store._ensure_root(paths, tmp_path)
    assert rebuilt and fp2 != fp
    assert [p.name for p in paths.roots.iterdir()] == [fp2]
    assert (paths.root / "docker/registry/v2/repositories/library/app0").is_dir()
    assert (paths.root / "docker/registry/v2/repositories/library/app1").is_dir()


def test_empty_store_is_an_error(tmp_path, paths):
    paths.base.mkdir(parents=True)
    with pytest.raises(LabError, match="python -m lab images"):
        store._ensure_root(paths, tmp_path)


def test_config_block_has_no_password(tmp_path):
    reg = store.StoreRegistry(registry=store.ADDRESS, username=store.USERNAME,
                              ca_file=tmp_path / "ca.crt", cert_dir=tmp_path, images={},
                              pid=1, root=tmp_path)
    assert set(reg.config()) == {"registry", "username", "ca_file", "images"}
    assert reg.secrets == {"apps.image_store.password": store.STORE_PASSWORD}
