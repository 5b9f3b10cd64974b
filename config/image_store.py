"""The local image store: one directory per image id holding its registry storage tree.

``<store>/<64 hex>/docker/registry/v2/...`` plus ``image.json``:
``{"image_id": "sha256:…", "refs": [{"repository", "tag", "digest"}]}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The distribution reference grammar (repository path components, tag): refs become URL paths
# and registry storage paths in verify-registry.sh and status-probe.sh.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _ref_problem(ref: "ImageRef") -> str | None:
    if not isinstance(ref.repository, str) or not _REPOSITORY.fullmatch(ref.repository):
        return f"repository {ref.repository!r} is not a registry repository name"
    if not isinstance(ref.tag, str) or not _TAG.fullmatch(ref.tag):
        return f"tag {ref.tag!r} is not a registry tag"
    if not isinstance(ref.digest, str) or not _DIGEST.fullmatch(ref.digest):
        return f"digest {ref.digest!r} is not 'sha256:' and 64 lowercase hex digits"
    return None


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str
    digest: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}@{self.digest}"


@dataclass(frozen=True)
class StoredImage:
    image_id: str
    refs: tuple[ImageRef, ...]

    @property
    def hex(self) -> str:
        return self.image_id.removeprefix("sha256:")


def load_images(store: str | Path, image_ids: list[str], field: str = "apps.image_store") -> list[StoredImage]:
    """Reads ``image.json`` of every id; every problem is one ``ConfigError`` entry on ``field``."""
    root = Path(store).expanduser()
    problems: list[tuple[str, str]] = []
    images: list[StoredImage] = []
    if not root.is_dir():
        raise ConfigError([(field, f"{str(store)!r} is not a directory")])
    for image_id in dict.fromkeys(image_ids):
        hex_id = image_id.removeprefix("sha256:")
        meta = root / hex_id / "image.json"
        if not (root / hex_id / "docker").is_dir() or not meta.is_file():
            problems.append((field, f"{str(store)!r} holds no registry data for {image_id} "
                                    f"(expected {hex_id}/docker and {hex_id}/image.json)"))
            continue
        try:
            doc = json.loads(meta.read_text())
            refs = tuple(ImageRef(r["repository"], r["tag"], r["digest"]) for r in doc["refs"])
        except (ValueError, KeyError, TypeError) as exc:
            problems.append((field, f"{meta} is not a valid image.json ({exc})"))
            continue
        if doc.get("image_id") != image_id or not refs:
            problems.append((field, f"{meta} does not describe {image_id} with sha256 refs "
                                    f"(image_id={doc.get('image_id')!r}, refs={len(refs)})"))
            continue
        bad = [p for p in map(_ref_problem, refs) if p]
        if bad:
            problems.append((field, f"{meta}: {bad[0]}"))
            continue
        images.append(StoredImage(image_id, refs))
    if problems:
        raise ConfigError(problems)
    return images
