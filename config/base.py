"""What every section model of the stack config shares.

`ConfigModel` is the base of every model: unknown keys are refused, inputs are never echoed by
pydantic, and when a field fails the model's cross-field rules still run on the raw input
(`_problems_despite_errors`), so one validation reports every problem. A validator reports
several problems at once with `raise_problems`, each with a path relative to the model; the
explanation (config/explain.py) turns them into dotted paths.

`EncryptedSecret` is a secret that is present but cannot be read offline; content checks skip it.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, SecretStr, TypeAdapter, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from config.scalars import HostIP

ENCRYPTED_PLACEHOLDER = "<encrypted>"


class EncryptedSecret(SecretStr):
    """A secret that is present but still encrypted (offline validation); its content is unknown."""

    def __init__(self, ciphertext: str = "") -> None:
        super().__init__(ENCRYPTED_PLACEHOLDER)
        self.ciphertext = ciphertext


def is_encrypted(value: object) -> bool:
    return isinstance(value, EncryptedSecret)


# ---------------------------------------------------------------------------------------------
# Problem plumbing: a validator may report several problems, each with a path relative to it.

PROBLEMS_ERROR = "config_problems"
"""The pydantic error type that carries a list of (relative path, message) problems."""


def raise_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        text = "\n".join(f"{p or '.'}: {m}" for p, m in problems)
        raise PydanticCustomError(PROBLEMS_ERROR, "{text}", {"problems": list(problems), "text": text})


def duplicates(items: list[str], field: str) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    problems = []
    for i, item in enumerate(items):
        if item in seen:
            problems.append((f"{field}[{i}]", f"{item} is listed twice (also at {field}[{seen[item]}])"))
        else:
            seen[item] = i
    return problems


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    @classmethod
    def _problems_despite_errors(cls, data: dict) -> list[tuple[str, str]]:
        """Cross-field rules to check on raw input when some field failed (default: none)."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _collect_all(cls, data: Any, handler: Any) -> Any:
        # A field error stops pydantic before the model's own rules run; run them anyway on the
        # raw input so one validation reports every problem.
        try:
            return handler(data)
        except ValidationError as e:
            extra = cls._problems_despite_errors(data) if isinstance(data, dict) else []
            if not extra:
                raise
            details = [_init_details(err) for err in e.errors(include_url=False)]
            text = "\n".join(f"{p}: {m}" for p, m in extra)
            details.append(
                InitErrorDetails(
                    type=PydanticCustomError(PROBLEMS_ERROR, "{text}", {"problems": extra, "text": text}),
                    loc=(),
                    input=data,
                )
            )
            raise ValidationError.from_exception_data(e.title, details, hide_input=True) from None


def _init_details(err: dict) -> InitErrorDetails:
    if err["type"] == PROBLEMS_ERROR:
        kind: Any = PydanticCustomError(PROBLEMS_ERROR, "{text}", err["ctx"])
        return InitErrorDetails(type=kind, loc=err["loc"], input=err.get("input"))
    details = InitErrorDetails(type=err["type"], loc=err["loc"], input=err.get("input"))
    if "ctx" in err:
        details["ctx"] = err["ctx"]
    return details


# ---------------------------------------------------------------------------------------------
# Reading raw input for `_problems_despite_errors`

_ip_adapter: TypeAdapter[str] = TypeAdapter(HostIP)


def valid_ip(value: Any) -> Optional[str]:
    """The value as a normalised IP, or None when it is not one."""
    try:
        return _ip_adapter.validate_python(value)
    except ValidationError:
        return None


def valid_ips(value: Any) -> Optional[list[str]]:
    """All items as normalised IPs, or None unless every item is a valid IP (a partial list misleads)."""
    if not isinstance(value, list):
        return None
    try:
        return [_ip_adapter.validate_python(item) for item in value]
    except ValidationError:
        return None


def section(data: Any, key: str) -> dict:
    """The mapping under `key` of raw input, or {} when there is none."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}
