"""The image store: a registry that holds the cluster's images as OCI (or Docker) images.

``apps.image_store`` names it (``registry: host[:port]``, HTTPS), how to log in (``username`` and
a secret ``password``, optional: anonymous pulls otherwise), the CA its certificate chains to
(``ca_file``, optional: the system's trust otherwise) and, per image of the cluster (the cluster
image id and each boot-history image id), the refs that image needs, pinned by digest::

    images:
      sha256:<64 hex>: [library/app0:v1@sha256:<64 hex>, ...]

The program copies each ref into master0's registry with skopeo (same repository and tag, the
manifest digest preserved) and every check after it (verification, status, recover) asks for that
digest. A pin is what a production cluster wants: the store's tags can move, the cluster's do not.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import SecretStr, field_validator, model_validator

from config.base import ConfigModel, is_encrypted, raise_problems
from config.scalars import _NUMERIC_LABEL, LocalPath, RegistryUser, control_problem, show

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The distribution reference grammar (repository path components, tag): refs become URL paths
# and registry storage paths in verify-registry.sh and status-probe.sh, and skopeo arguments.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PINNED = re.compile(r"(?P<repository>[^:@]+):(?P<tag>[^:@]+)@(?P<digest>.+)")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ADDRESS = re.compile(r"(?P<host>[^:/\s]+)(?::(?P<port>[0-9]{1,5}))?")


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


def parse_ref(text: Any) -> ImageRef:
    """``repository:tag@sha256:<hex>``, each part checked whole; ValueError says which part."""
    if not isinstance(text, str):
        raise ValueError(f"{show(text)} is not a string 'repository:tag@sha256:<64 hex>'")
    m = _PINNED.fullmatch(text)
    if not m:
        raise ValueError(f"{show(text)} is not 'repository:tag@sha256:<64 hex>' (a ref pinned by "
                         "its manifest digest: `skopeo inspect --format '{{.Digest}}' docker://STORE/REPO:TAG`)")
    ref = ImageRef(m["repository"], m["tag"], m["digest"])
    if not _REPOSITORY.fullmatch(ref.repository):
        raise ValueError(f"repository {ref.repository!r} of {show(text)} is not a registry repository name")
    if not _TAG.fullmatch(ref.tag):
        raise ValueError(f"tag {ref.tag!r} of {show(text)} is not a registry tag")
    if not _DIGEST.fullmatch(ref.digest):
        raise ValueError(f"digest {ref.digest!r} of {show(text)} is not 'sha256:' and 64 lowercase hex digits")
    return ref


def _address(value: str) -> str:
    """``host[:port]``: an IPv4 address or a DNS name, and a port (default 443)."""
    m = _ADDRESS.fullmatch(value) if isinstance(value, str) else None
    if not m:
        hint = " (give host[:port], without https://)" if isinstance(value, str) and "://" in value else ""
        raise ValueError(f"{show(value)} is not host[:port]{hint}")
    host, port = m["host"].lower(), int(m["port"] or 443)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _DNS.fullmatch(host):
            raise ValueError(f"{show(value)}: {host!r} is neither an IPv4 address nor a DNS name") from None
        if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
            # A typo'd address (10.0.0.300) would pass as a name and fail only at the fill.
            raise ValueError(f"{show(value)}: {host!r} is not a valid IPv4 address, and a name "
                             "whose last label is a number reads as one") from None
    else:
        if ip.version != 4 or ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"{show(value)}: {host!r} is not a registry's IPv4 address")
    if not 1 <= port <= 65535:
        raise ValueError(f"{show(value)}: port {port} is not in 1..65535")
    return f"{host}:{port}"


class ImageStoreConfig(ConfigModel):
    registry: str
    username: Optional[RegistryUser] = None
    password: Optional[SecretStr] = None
    ca_file: Optional[LocalPath] = None
    images: dict[str, list[str]]

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        return _address(value)

    @model_validator(mode="after")
    def _check(self) -> "ImageStoreConfig":
        problems: list[tuple[str, str]] = []
        if self.username is not None and self.password is None:
            problems.append(("password", f"is required when username is set (username: {self.username!r})"))
        if self.password is not None and self.username is None:
            problems.append(("username", "is required when password is set"))
        if self.password is not None and not is_encrypted(self.password):
            secret = self.password.get_secret_value()
            if not secret:
                problems.append(("password", "is empty"))
            elif control_problem(secret):
                problems.append(("password", "<secret> holds a line break or control character"))
        if not self.images:
            problems.append(("images", "is empty: list the refs of the cluster image and of every boot-history image"))
        for image_id, refs in self.images.items():
            if not _DIGEST.fullmatch(image_id):
                problems.append((f"images.{image_id}", f"{show(image_id)} is not an image id 'sha256:<64 hex>'"))
                continue
            if not refs:
                problems.append((f"images.{image_id}", "lists no ref"))
            for i, text in enumerate(refs):
                try:
                    parse_ref(text)
                except ValueError as exc:
                    problems.append((f"images.{image_id}[{i}]", str(exc)))
        raise_problems(problems)
        return self

    def stored(self, image_ids: list[str]) -> list[StoredImage]:
        """The images of ``image_ids`` (validated to be listed: ``missing``), in that order."""
        return [StoredImage(i, tuple(parse_ref(r) for r in self.images[i])) for i in dict.fromkeys(image_ids)]

    def missing(self, image_ids: list[str]) -> list[str]:
        return [i for i in dict.fromkeys(image_ids) if i not in self.images]
