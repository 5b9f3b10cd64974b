"""Validated stack config of the `sealer-registry` program (see docs/design.md, "Stack config").

``PROJECT`` is the project's name (Pulumi.yaml), the namespace of every config key; everything
else (CLI, lab, tests, bench) takes it from here."""

from config.errors import ConfigError, Problem
from config.loader import (
    build_config,
    from_pulumi_config,
    load_stack_file,
    read_runtime_config,
    stack_file_path,
)
from config.models import (
    PROJECT,
    SECRET_PATHS,
    Application,
    AppsConfig,
    AppType,
    BootHistory,
    ClusterConfig,
    Distribution,
    EncryptedSecret,
    JumpHost,
    KubernetesConfig,
    LocalRegistry,
    RegistryConfig,
    SshConfig,
    StackConfig,
    TlsConfig,
    is_encrypted,
)

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
