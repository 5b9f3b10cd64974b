"""The config reference (docs/config.md) is checked against the models."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from config import StackConfig

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = prefix + name
        nested = [a for a in (field.annotation, *typing.get_args(field.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and path != "apps.history":
            paths += leaf_paths(nested[0], path + ".")
        else:
            paths.append(path)
    return paths


def test_every_config_key_is_in_the_config_reference():
    """Each leaf key of StackConfig appears in the config reference table."""
    text = REFERENCE.read_text()
    reference = text[text.index("## Config reference"):]
    missing = []
    for path in leaf_paths(StackConfig):
        if f"`{path}`" not in reference:
            missing.append(path)
    assert missing == []
