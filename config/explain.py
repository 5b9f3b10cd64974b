"""pydantic's validation errors, explained as problems: a dotted field path and a message.

A message says what was expected and quotes the value (secrets, at `SECRET_PATHS` or looking like
one, as ``<secret>``); an unknown key suggests the closest allowed key. Problems that validators
report in bulk (`raise_problems`) keep their own messages, their paths joined to the field's.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Optional, get_args, get_origin

from pydantic import BaseModel, ValidationError

from config.base import PROBLEMS_ERROR
from config.errors import Problem
from config.scalars import show
from config.stack import StackConfig, is_secret_path


def join_path(base: str, rel: str) -> str:
    if not rel:
        return base
    if not base:
        return rel
    return base + rel if rel.startswith("[") else f"{base}.{rel}"


def _model_in(annotation: Any) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    model: Optional[type[BaseModel]] = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        origin = get_origin(field.annotation)
        if origin is dict:
            return None
        model = _model_in(field.annotation)
    return model


def loc_path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        path = path + f"[{part}]" if isinstance(part, int) else join_path(path, str(part))
    return path


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _message(err: dict, path: str, root: type[BaseModel]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    shown = "<secret>" if is_secret_path(path) else show(value)
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        model = _model_at(root, tuple(err["loc"][:-1]))
        if model is None:
            return "unknown key"
        allowed = list(model.model_fields)
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r} ({hint}allowed: {', '.join(allowed)})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "enum":
        return f"{shown} is not one of {ctx.get('expected')}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {shown}"
    return f"{err['msg']} (got {shown})"


def explain(error: ValidationError, root: type[BaseModel] = None) -> list[Problem]:  # type: ignore[assignment]
    """Turn a pydantic ValidationError into problems with dotted paths, one per problem."""
    root = root or StackConfig
    problems: list[Problem] = []
    for err in error.errors(include_url=False):
        base = loc_path(err["loc"])
        if err["type"] == PROBLEMS_ERROR:
            found = [Problem(join_path(base, rel), message) for rel, message in err["ctx"]["problems"]]
        else:
            found = [Problem(base, _message(err, base, root))]
        problems += [p for p in found if p not in problems]
    return problems
