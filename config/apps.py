"""The `apps` section: the cluster image and the boot history of the applications sealer runs.

Owns sealer's boot-history document (`BootHistory`, the `application.json` schema) and the rule
that it comes from exactly one of `history` (inline) or `history_file`. The file itself is read by
the loader (config/loader.py, `read_history_file`), which hands the result to `AppsConfig` in the
validation context; the model reports its problems at `apps.history_file`, in field order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Optional

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from config.base import ConfigModel, duplicates, raise_problems, section
from config.image_store import ImageStoreConfig, StoredImage
from config.scalars import AppName, ImageId, LocalPath, NonEmptyText, Text


class AppType(StrEnum):
    """sealer's application types (pkg/define/application/types.go@v0.11.0: kube, helm, shell).
    An application may have none (`type` is `omitempty` in its image extension,
    pkg/define/application/v1/application.go@v0.11.0:27-41): `type` is then null here."""

    HELM = "helm"
    KUBE = "kube"
    SHELL = "shell"


class Application(ConfigModel):
    name: AppName
    image_id: ImageId
    type: Optional[AppType] = None
    launch_cmd: str = ""  # shell code by design: sealer runs it; it only travels inside JSON
    version: Text = ""


class Launch(ConfigModel):
    app_names: list[str] = Field(default_factory=list)


def _app_name_problems(names: list[str], launch: list[str]) -> list[tuple[str, str]]:
    problems = [(f"{p}.name", m) for p, m in duplicates(names, "applications")]
    for i, name in enumerate(launch):
        if name not in names:
            problems.append((f"launch.app_names[{i}]", f"{name!r} names no application (applications: {', '.join(names) or 'none'})"))
    return problems


class BootHistory(ConfigModel):
    """sealer's boot-history document (`application.json`)."""

    type: NonEmptyText
    applications: list[Application] = Field(default_factory=list)
    launch: Launch = Field(default_factory=Launch)

    @model_validator(mode="after")
    def _check(self) -> "BootHistory":
        raise_problems(_app_name_problems([a.name for a in self.applications], self.launch.app_names))
        return self

    @classmethod
    def _problems_despite_errors(cls, data: dict) -> list[tuple[str, str]]:
        apps = data.get("applications", [])
        launch = section(data, "launch").get("app_names", [])
        if not isinstance(apps, list) or not isinstance(launch, list):
            return []
        names = [a.get("name") if isinstance(a, dict) else None for a in apps]
        if not all(isinstance(n, str) for n in names) or not all(isinstance(n, str) for n in launch):
            return []
        return _app_name_problems(names, launch)

    @property
    def image_ids(self) -> list[str]:
        return list(dict.fromkeys(a.image_id for a in self.applications))


@dataclass(frozen=True)
class HistoryFileRead:
    """`apps.history_file` as the loader read it (config/loader.py, before validation): the boot
    history, or the problems to report at `apps.history_file`."""

    given: str
    history: Optional[BootHistory] = None
    problems: tuple[str, ...] = ()


HISTORY_FILE_READ = "history_file_read"
"""Validation-context key under which the loader hands `AppsConfig` its `HistoryFileRead`."""


class AppsConfig(ConfigModel):
    """The boot history, and an optional source of the registry data: ``image_store``, a registry
    holding the images of the cluster image (``cluster_image_id``) and of every boot-history image,
    pinned by digest. The program copies them into master0's registry, whose tree the other deploy
    hosts pull host to host. Without both, the data is the cluster's own (an adopted cluster:
    sealer's on master0): master0 keeps it and the replicas pull it; a new master0 is filled from
    a replica."""

    history: Optional[BootHistory] = None
    history_file: Optional[LocalPath] = None
    image_store: Optional[ImageStoreConfig] = None
    cluster_image_id: Optional[ImageId] = None

    _loaded_history: Optional[BootHistory] = PrivateAttr(default=None)

    @field_validator("image_store", mode="before")
    @classmethod
    def _not_a_directory(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                f"{value!r} is a path; the image store is a registry holding the cluster's images: "
                "{registry: host[:port], username, password (secret), ca_file, images: {<image id>: "
                "[repository:tag@sha256:<digest>, ...]}} (docs/config.md, 'Config reference')")
        return value

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> "AppsConfig":
        if (self.history is None) == (self.history_file is None):
            given = "both are set" if self.history is not None else "neither is set"
            raise_problems([("", f"exactly one of history / history_file is required ({given})")])
        problems: list[tuple[str, str]] = []
        if (self.image_store is None) != (self.cluster_image_id is None):
            missing, other = (("image_store", "cluster_image_id") if self.image_store is None
                              else ("cluster_image_id", "image_store"))
            problems.append((missing, f"is required together with {other} (the store holds the "
                                      "cluster image's data; omit both to copy no data)"))
        if self.history_file is not None:
            try:
                self._loaded_history = _history_from_file(self.history_file, (info.context or {}).get(HISTORY_FILE_READ))
            except PydanticCustomError as e:
                problems += (e.context or {}).get("problems", [])
        if self.image_store is not None and self.cluster_image_id is not None and not problems:
            for image_id in self.image_store.missing(self.image_ids):
                what = "the cluster image" if image_id == self.cluster_image_id else "a boot-history image"
                problems.append(("image_store.images", f"has no refs for {image_id} ({what}); "
                                                       "list the refs of every image the cluster runs"))
        raise_problems(problems)
        return self

    @property
    def copies_data(self) -> bool:
        """The program copies registry data from the image store into master0's registry."""
        return self.image_store is not None

    @property
    def image_ids(self) -> list[str]:
        """The cluster image first, then the boot history's (none without an image store)."""
        if not self.copies_data:
            return []
        return list(dict.fromkeys([self.cluster_image_id, *self.boot_history.image_ids]))

    @property
    def stored_images(self) -> list[StoredImage]:
        """The images the registry must serve, with their pinned refs (none without a store)."""
        return self.image_store.stored(self.image_ids) if self.image_store is not None else []

    @property
    def boot_history(self) -> BootHistory:
        history = self.history if self.history is not None else self._loaded_history
        assert history is not None
        return history


def _history_from_file(given: str, read: Any) -> BootHistory:
    """The history the loader read from `given`; its problems are reported here, in field order."""
    if not isinstance(read, HistoryFileRead) or read.given != given:
        raise_problems([("history_file", "was not read (config.loader.build_config reads it before validation)")])
    raise_problems([("history_file", message) for message in read.problems])
    assert read.history is not None
    return read.history
