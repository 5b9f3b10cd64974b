"""Render the distribution (registry v2) configuration written to ``<rootfs>/etc/registry.yml``."""

from __future__ import annotations

import posixpath
from typing import Any

import yaml

__all__ = ["render_registry_yml", "registry_config", "DEBUG_ADDR", "HTPASSWD_REALM"]

# sealer's basefs runs the registry's debug listener (pprof, /metrics) on :5002; we keep the
# port but bind it to loopback, as it is unauthenticated.
DEBUG_ADDR = "127.0.0.1:5002"
HTPASSWD_REALM = "sealer-registry"


def _paths(rootfs: str, domain: str) -> dict[str, str]:
    return {
        "storage": posixpath.join(rootfs, "registry"),
        "cert": posixpath.join(rootfs, "certs", f"{domain}.crt"),
        "key": posixpath.join(rootfs, "certs", f"{domain}.key"),
        "htpasswd": posixpath.join(rootfs, "etc", "registry_htpasswd"),
    }


def registry_config(*, rootfs: str, domain: str, port: int, tls: bool, auth: bool) -> dict[str, Any]:
    """The configuration as a dict (see ``render_registry_yml``)."""
    if not isinstance(rootfs, str) or not rootfs.startswith("/") or any(c in rootfs for c in "\n\0"):
        raise ValueError(f"rootfs must be an absolute path, got {rootfs!r}")
    rootfs = posixpath.normpath(rootfs)
    if not domain or any(c.isspace() or c in "/:\0" for c in domain):
        raise ValueError(f"invalid registry domain {domain!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    paths = _paths(rootfs, domain)

    http: dict[str, Any] = {
        "addr": f":{port}",
        "debug": {"addr": DEBUG_ADDR, "prometheus": {"enabled": True, "path": "/metrics"}},
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if tls:
        http["tls"] = {"certificate": paths["cert"], "key": paths["key"]}
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": paths["storage"]},
            # Deletes stay off: the image store is the source of truth and is copied in whole.
            "delete": {"enabled": False},
        },
        "http": http,
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    if auth:
        config["auth"] = {"htpasswd": {"realm": HTPASSWD_REALM, "path": paths["htpasswd"]}}
    return config


def render_registry_yml(*, rootfs: str, domain: str, port: int, tls: bool, auth: bool) -> str:
    """distribution v2 config YAML, byte-stable for the same arguments (keys sorted).

    Paths are the host's sealer layout: storage ``<rootfs>/registry``, TLS
    ``<rootfs>/certs/<domain>.crt|.key`` (when ``tls``), htpasswd ``<rootfs>/etc/registry_htpasswd``
    (when ``auth``). Listens on ``:<port>``; debug/metrics on ``127.0.0.1:5002``.
    """
    config = registry_config(rootfs=rootfs, domain=domain, port=port, tls=tls, auth=auth)
    text = yaml.safe_dump(config, sort_keys=True, default_flow_style=False, allow_unicode=False)
    if yaml.safe_load(text) != config:  # pragma: no cover - guards against YAML surprises
        raise AssertionError("rendered registry.yml does not round-trip")
    return text
