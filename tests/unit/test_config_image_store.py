"""The local image store (config/image_store.py): what `image.json` may say about an image.

Its refs become arguments of verify-registry.sh and status-probe.sh, which build registry URLs and
storage paths from them, so each part is checked whole against the registry's own grammar.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config import ConfigError
from config.image_store import load_images

IMAGE_ID = "sha256:" + "ab" * 32
DIGEST = "sha256:" + "cd" * 32


def store_with(tmp_path: Path, refs: list[dict], image_id: str = IMAGE_ID) -> Path:
    image = tmp_path / "store" / IMAGE_ID.removeprefix("sha256:")
    (image / "docker").mkdir(parents=True)
    (image / "image.json").write_text(json.dumps({"image_id": image_id, "refs": refs}))
    return tmp_path / "store"


@pytest.mark.parametrize("repository, tag", [
    ("library/app0", "v1"), ("sealer/cluster-base", "v1.22.15"), ("app", "latest"),
    ("a/b__c/d-e.f", "3.9_rc-1"), ("calico/node", "V3"),
])
def test_refs_in_the_registry_grammar_are_loaded(tmp_path, repository, tag):
    store = store_with(tmp_path, [{"repository": repository, "tag": tag, "digest": DIGEST}])
    [image] = load_images(store, [IMAGE_ID])
    assert str(image.refs[0]) == f"{repository}:{tag}@{DIGEST}"


@pytest.mark.parametrize("ref, fragment", [
    ({"repository": "library/app0\n", "tag": "v1", "digest": DIGEST}, "repository 'library/app0\\n' is not a registry repository name"),
    ({"repository": "../../etc", "tag": "v1", "digest": DIGEST}, "repository '../../etc'"),
    ({"repository": "Library/App", "tag": "v1", "digest": DIGEST}, "repository 'Library/App'"),
    ({"repository": "app", "tag": "v1 x", "digest": DIGEST}, "tag 'v1 x' is not a registry tag"),
    ({"repository": "app", "tag": "-v1", "digest": DIGEST}, "tag '-v1'"),
    ({"repository": "app", "tag": "v1", "digest": DIGEST + "\n"}, "is not 'sha256:' and 64 lowercase hex digits"),
    ({"repository": "app", "tag": "v1", "digest": DIGEST.upper()}, "is not 'sha256:' and 64 lowercase hex digits"),
])
def test_refs_outside_the_grammar_are_refused(tmp_path, ref, fragment):
    store = store_with(tmp_path, [ref])
    with pytest.raises(ConfigError) as info:
        load_images(store, [IMAGE_ID])
    [problem] = info.value.problems
    assert problem.path == "apps.image_store" and fragment in problem.message, problem


def test_image_json_of_another_image_is_refused(tmp_path):
    store = store_with(tmp_path, [{"repository": "app", "tag": "v1", "digest": DIGEST}], image_id="sha256:" + "00" * 32)
    with pytest.raises(ConfigError) as info:
        load_images(store, [IMAGE_ID])
    assert "does not describe" in info.value.problems[0].message
