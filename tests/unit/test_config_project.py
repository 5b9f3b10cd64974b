"""Pulumi.yaml declares the top-level config keys in the form the engine accepts.

The engine validates project config declarations against its project schema (pulumi/pulumi
sdk/go/common/workspace/project.json at v3.272.0): `type` is one of string, integer, boolean,
array (with `items`), object; a key without `default` is required on every stack. Older engines
(before `object` was added) reject `type: object`.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic_core import PydanticUndefined

import config
from config import StackConfig

REPO = Path(__file__).resolve().parents[2]
PROJECT = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
ENGINE_TYPES = {"string", "integer", "boolean", "array", "object"}
DECLARATION_KEYS = {"type", "items", "description", "secret", "default"}


def test_project_name_and_runtime():
    """The config namespace is the project name (config.PROJECT, which every other part uses);
    the ambient python runs the program."""
    assert PROJECT["name"] == "sealer-registry" == config.PROJECT
    assert PROJECT["runtime"] == "python"


def test_declarations_use_only_engine_types():
    """Every declaration has a type the engine knows and only keys its schema allows."""
    for key, declaration in PROJECT["config"].items():
        assert declaration["type"] in ENGINE_TYPES, key
        assert set(declaration) <= DECLARATION_KEYS, key
        assert declaration.get("description"), key
        if declaration["type"] == "array":
            assert declaration["items"]["type"] in ENGINE_TYPES, key


def test_declared_keys_are_model_fields_with_matching_requiredness():
    """A key without default is required by the engine, so it must be required by the model too."""
    fields = StackConfig.model_fields
    for key, declaration in PROJECT["config"].items():
        assert key in fields, key
        if "default" in declaration:
            default = fields[key].default
            if default is PydanticUndefined:
                default = fields[key].default_factory()
            assert declaration["default"] == default, key
        else:
            assert fields[key].is_required(), key


def test_every_top_level_key_is_declared_with_its_shape():
    """Each StackConfig field is declared; objects as `object`, lists as `array`."""
    assert set(PROJECT["config"]) == set(StackConfig.model_fields)
    for key in ("cluster", "registry", "apps", "kubernetes"):
        assert PROJECT["config"][key]["type"] == "object", key
    assert PROJECT["config"]["down_hosts"]["type"] == "array"


def test_no_object_is_declared_secret():
    """`secret: true` on an object only demands some encrypted value inside; the loader checks
    each secret field instead, so the engine must not reject a stack without secrets in a key."""
    assert not any(declaration.get("secret") for declaration in PROJECT["config"].values())
