"""Validated stack config of the `sealer-registry` program (see docs/design.md, "Stack config").

``PROJECT`` is the project's name (Pulumi.yaml), the namespace of every config key; everything
else (CLI, lab, tests, bench) takes it from here.

Modules: `scalars` (rules for one value), `base` (the base model, problem plumbing, encrypted
secrets), one per section (`cluster`, `registry`, `apps`, `kubernetes`), `stack` (StackConfig and
the rules across sections), `explain` (pydantic errors as problems), `loader` (stack file, engine
values, every local file the config names), `errors` (ConfigError), `image_store`.
"""

from config.apps import Application, AppsConfig, AppType, BootHistory
from config.base import EncryptedSecret, is_encrypted
from config.cluster import ClusterConfig, JumpHost, SshConfig
from config.errors import ConfigError, Problem
from config.kubernetes import KubernetesConfig
from config.loader import (
    build_config,
    from_pulumi_config,
    load_stack_file,
    read_runtime_config,
    stack_file_path,
)
from config.registry import LocalRegistry, RegistryConfig, TlsConfig
from config.stack import PROJECT, SECRET_PATHS, Distribution, StackConfig

__all__ = [
    "PROJECT",
    "SECRET_PATHS",
    "Application",
    "AppsConfig",
    "AppType",
    "BootHistory",
    "ClusterConfig",
    "ConfigError",
    "Distribution",
    "EncryptedSecret",
    "JumpHost",
    "KubernetesConfig",
    "LocalRegistry",
    "Problem",
    "RegistryConfig",
    "SshConfig",
    "StackConfig",
    "TlsConfig",
    "build_config",
    "from_pulumi_config",
    "is_encrypted",
    "load_stack_file",
    "read_runtime_config",
    "stack_file_path",
]
