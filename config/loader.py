"""Loading the stack config: offline from `Pulumi.<stack>.yaml`, or at run time from the engine.

Both paths end in `build_config`, which validates with the models and reports every problem as
one `ConfigError`. Only `read_runtime_config` touches Pulumi; `__main__.py` calls it once.
The loader owns every read of a local file the config names: `apps.history_file` is read here
before validation and handed to the models; `check_files` checks the others can be read.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import TypeAdapter, ValidationError

from config.apps import HISTORY_FILE_READ, BootHistory, HistoryFileRead
from config.base import EncryptedSecret
from config.errors import ConfigError, Problem
from config.explain import explain
from config.scalars import LocalPath, has_control
from config.stack import PROJECT, SECRET_PATHS, StackConfig, host_secrets, is_secret_path

_PREFIX = f"{PROJECT}:"


def _secret_hint(path: str) -> str:
    return f"must be a Pulumi secret (pulumi config set --secret --path {path} ...)"


class _StackFileLoader(yaml.SafeLoader):
    """YAML as the engine (go-yaml v3) reads it: only true/false are booleans, so `yes`, `no`,
    `on`, `off` stay strings offline exactly as they reach the program at run time."""


_StackFileLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StackFileLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)\Z"), list("tTfF")
)


def stack_file_path(stack: str, project_dir: str | os.PathLike = ".") -> Path:
    """`Pulumi.<stack>.yaml` in the project dir; an `org/project/stack` name uses its last part."""
    return Path(project_dir) / f"Pulumi.{stack.split('/')[-1]}.yaml"


# ---------------------------------------------------------------------------------------------
# Offline: the stack file


def load_stack_file(path: str | os.PathLike, *, check_files: bool = False) -> StackConfig:
    """Validate a stack file without the engine: encrypted values count as present.

    Raises ConfigError listing every problem. Content checks that need an encrypted value (PEM
    parsing of tls.ca_key, ...) are skipped; `secure_paths` on the result names those values.
    `check_files`: also check that the local files the config names can be read (`local_file_problems`).
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([("", f"stack file {source} not found (create it with `pulumi stack init`, or check --stack/--project-dir)")], source) from None
    except OSError as e:
        raise ConfigError([("", f"cannot read stack file {source}: {e.strerror or e}")], source) from e
    try:
        document = yaml.load(text, Loader=_StackFileLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError([("", f"{source} is not valid YAML: {e}")], source) from e
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError([("", f"{source} must be a YAML mapping with a 'config:' key")], source)
    entries = document.get("config") or {}
    if not isinstance(entries, dict):
        raise ConfigError([("", f"{source}: 'config:' must be a mapping of '{PROJECT}:<key>' entries")], source)

    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in entries.items():
        namespace, sep, name = str(key).partition(":")
        if not sep:
            problems.append((str(key), f"config key {str(key)!r} has no namespace (expected '{PROJECT}:{key}')"))
        elif namespace == PROJECT and "." in name and name.split(".")[0] in StackConfig.model_fields:
            # `pulumi config set registry.password x` (without --path) makes a flat key; the
            # program would never see it under registry.
            problems.append((name, f"is a flat key; nest it with `pulumi config set --path {name} ...`"))
        elif namespace == PROJECT:
            values[name] = value
        # other namespaces (kubernetes:, command:, ...) configure providers, not this program

    secure: set[str] = set()
    misplaced: set[str] = set()
    values = _replace_secure(values, "", secure, problems)
    for secret_path in secure:
        if not is_secret_path(secret_path):
            misplaced.add(secret_path)
            problems.append((secret_path, f"is encrypted, but it is not a secret field; store it in plaintext so it can be validated (secret fields: {', '.join(SECRET_PATHS)}, cluster.ssh.hosts.<ip>.password)"))
    present = {p: _get(values, p) for p in SECRET_PATHS} | host_secrets(values)
    for secret_path, value in present.items():
        if value is not None and not isinstance(value, EncryptedSecret):
            problems.append((secret_path, _secret_hint(secret_path)))

    return build_config(values, base_dir=path.parent, secure_paths=secure, source=source, problems=problems,
                        ignore=misplaced, check_files=check_files)


def _replace_secure(value: Any, path: str, secure: set[str], problems: list[tuple[str, str]]) -> Any:
    """Swap every `{secure: <ciphertext>}` for an EncryptedSecret and record where it was."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            ciphertext = value["secure"]
            if not isinstance(ciphertext, str) or not ciphertext:
                problems.append((path, f"secure value must be a non-empty ciphertext string, got {ciphertext!r}"))
            secure.add(path)
            return EncryptedSecret(ciphertext if isinstance(ciphertext, str) else "")
        return {k: _replace_secure(v, f"{path}.{k}" if path else str(k), secure, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_secure(v, f"{path}[{i}]", secure, problems) for i, v in enumerate(value)]
    return value


def _get(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


# ---------------------------------------------------------------------------------------------
# Run time: values the engine hands to the program


_JSON_KEYS = {"down_hosts", "cluster", "registry", "apps", "kubernetes"}


def from_pulumi_config(
    values: Mapping[str, Any],
    secret_keys: Iterable[str] = (),
    base_dir: str | os.PathLike | None = None,
    *,
    check_files: bool = False,
) -> StackConfig:
    """Build the config from raw engine values (`pulumi.runtime.get_config`), keys with or without
    the `sealer-registry:` prefix. Objects and lists arrive as JSON strings (already-parsed values
    are accepted too). `secret_keys` are the top-level keys the engine marks secret: the engine only
    knows secrecy per top-level key, so a secret field is accepted when its top-level key is secret.
    """
    problems: list[tuple[str, str]] = []
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if raw is None:
            continue
        if name in _JSON_KEYS and isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as e:
                problems.append((name, f"is not valid JSON ({e})"))
                continue
        parsed[name] = raw
    secret = {k[len(_PREFIX):] if k.startswith(_PREFIX) else k for k in secret_keys}
    present = {p: _get(parsed, p) for p in SECRET_PATHS} | host_secrets(parsed)
    for secret_path, value in present.items():
        if value is not None and secret_path.split(".")[0] not in secret:
            problems.append((secret_path, _secret_hint(secret_path)))
    return build_config(parsed, base_dir=base_dir, secure_paths=secret, source="stack config", problems=problems,
                        check_files=check_files)


def read_runtime_config() -> StackConfig:
    """Read this project's config from the running engine and validate it, the local files it names
    included (the only Pulumi reader)."""
    import pulumi.runtime
    from pulumi.runtime import config as runtime_config

    names = set(StackConfig.model_fields)
    # Also pick up keys the model does not know, so a typo fails the run instead of being ignored.
    try:
        names |= {k[len(_PREFIX):] for k in runtime_config.CONFIG.get() if k.startswith(_PREFIX)}
    except Exception:  # internal API; the declared keys are still read below
        pass
    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for name in sorted(names):
        key = _PREFIX + name
        value = pulumi.runtime.get_config(key)
        if value is not None:
            values[name] = value
            if pulumi.runtime.is_config_secret(key):
                secret_keys.add(name)
    return from_pulumi_config(values, secret_keys, base_dir=os.getcwd(), check_files=True)


# ---------------------------------------------------------------------------------------------


def build_config(
    values: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike | None = None,
    secure_paths: Iterable[str] = (),
    source: str | None = None,
    problems: Iterable[tuple[str, str]] = (),
    ignore: Iterable[str] = (),
    check_files: bool = False,
) -> StackConfig:
    """Validate plain values (already decoded from YAML/JSON); raise ConfigError with all problems.

    `problems` found earlier by the caller are reported first; model problems at or under a path
    in `ignore` are dropped (they would only repeat an earlier problem about that value).
    `check_files` adds `local_file_problems` (relative paths resolve against `base_dir`).
    """
    kept = [Problem(*p) for p in problems]
    ignored = tuple(ignore)
    context = {HISTORY_FILE_READ: _history_file_read(values, base_dir)}
    try:
        config = StackConfig.model_validate(dict(values), context=context)
    except ValidationError as e:
        config = None
        for problem in explain(e):
            if any(problem.path == i or problem.path.startswith((i + ".", i + "[")) for i in ignored):
                continue
            if problem not in kept:
                kept.append(problem)
    if check_files:
        kept += [p for p in map(Problem._make, local_file_problems(values, base_dir)) if p not in kept]
    if kept:
        raise ConfigError(kept, source)
    assert config is not None
    config._secure_paths = frozenset(secure_paths)
    return config


# ---------------------------------------------------------------------------------------------
# Local files the config names


def resolve_path(value: str, base_dir: str | os.PathLike | None) -> Path:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = Path(base_dir or os.getcwd()) / path
    return path


_local_path: TypeAdapter[str] = TypeAdapter(LocalPath)


def _history_file_read(values: Mapping[str, Any], base_dir: str | os.PathLike | None) -> HistoryFileRead | None:
    """`apps.history_file` read, when the models will take the history from it: it is a valid path
    and `apps.history` is not given. Its problems are reported by `AppsConfig`, in field order."""
    apps = values.get("apps")
    if not isinstance(apps, dict) or apps.get("history") is not None:
        return None
    try:
        given = _local_path.validate_python(apps.get("history_file"))
    except ValidationError:
        return None  # absent or malformed: the model reports it
    return read_history_file(given, base_dir)


def read_history_file(given: str, base_dir: str | os.PathLike | None) -> HistoryFileRead:
    """Read the boot history at `given` (relative to `base_dir`) and validate it as a `BootHistory`;
    each problem names the file (and the field inside it)."""
    path = resolve_path(given, base_dir)
    where = given if str(path) == given else f"{given} ({path})"
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        return HistoryFileRead(given, problems=(f"cannot read {where}: {e.strerror or e}",))
    except ValueError as e:
        return HistoryFileRead(given, problems=(f"{where} is not valid JSON: {e}",))
    try:
        return HistoryFileRead(given, history=BootHistory.model_validate(data))
    except ValidationError as e:
        problems = explain(e, root=BootHistory)
        return HistoryFileRead(given, problems=tuple(f"{where}: {p.path or '.'}: {p.message}" for p in problems))


# (field, "file" | "directory" | "certificates": a file of PEM certificates). apps.history_file is not here: `read_history_file` reads it
# whether or not files are checked, so a missing one is already reported.
LOCAL_PATHS: tuple[tuple[str, str], ...] = (
    ("cluster.ssh.private_key_path", "file"),
    ("kubernetes.kubeconfig_path", "file"),
    ("apps.image_store.ca_file", "certificates"),
    ("registry.local_registry.node_entry.bundle", "file"),
)


def local_file_problems(values: Mapping[str, Any], base_dir: str | os.PathLike | None) -> list[tuple[str, str]]:
    """Each local path of `LOCAL_PATHS` that cannot be read as what it must be. A path that is
    absent or malformed is skipped: the model reports it. Reads for real (open, list) instead of
    asking `os.access`, which says yes to root for a file root cannot open either."""
    problems: list[tuple[str, str]] = []
    for field, kind in LOCAL_PATHS:
        given = _get(values, field)
        if not isinstance(given, str) or not given.strip() or has_control(given):
            continue
        path = Path(os.path.abspath(resolve_path(given, base_dir)))
        where = given if str(path) == given else f"{given} ({path})"
        problem = _directory_problem(path) if kind == "directory" else _file_problem(path)
        if problem is None and kind == "certificates":
            problem = _certificates_problem(path)
            if problem:
                problems.append((field, f"{where} {problem}"))
                continue
        if problem:
            problems.append((field, f"cannot {'list the directory' if kind == 'directory' else 'read'} {where}: {problem}"))
    return problems


def _directory_problem(path: Path) -> str | None:
    try:
        with os.scandir(path):
            return None
    except OSError as e:
        return e.strerror or str(e)


def _certificates_problem(path: Path) -> str | None:
    from material.certs import load_pem_certificates

    try:
        data = path.read_bytes()
        if not load_pem_certificates(data):
            return "holds no PEM certificate"
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    except ValueError:
        return "is not a file of PEM certificates (-----BEGIN CERTIFICATE-----)"
    return None


def _file_problem(path: Path) -> str | None:
    try:
        if path.is_dir():
            return "it is a directory"
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # NONBLOCK: a FIFO must not hang us
        return None
    except OSError as e:
        return e.strerror or str(e)
