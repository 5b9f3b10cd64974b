"""Render the distribution (registry v2) configuration the program writes to
``<rootfs>/etc/registry_config.yml`` (the file sealer's ``init-registry.sh`` mounts into its
registry container), and only there: ``<rootfs>/etc/registry.yml`` is sealer v0.8's own settings
file ``{ip, domain, port, username, password}`` (pkg/runtime/registry.go@v0.8.7), never ours.

sealer runs the registry in a container (``registry:2.7.1``) with these mounts:
``<VOLUME>`` → ``/var/lib/registry``, ``<rootfs>/certs`` → ``/certs``,
``etc/registry_config.yml`` → ``/etc/docker/registry/config.yml`` and ``etc/registry_htpasswd`` →
``/htpasswd``. Host paths do not exist in there, so every path in the config is the path the
registry sees inside that container.

Before starting it, sealer's script runs ``sed -i "s/5000/$PORT/g"`` on the config. The rendered
text therefore holds ``5000`` nowhere but in the listen address, and only when the port is 5000
itself: then the sed leaves the file byte-identical and a second ``up`` changes nothing.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = [
    "render_registry_yml", "registry_config", "sed_port_problem", "brought_config_problems",
    "read_only_registry_yml", "is_read_only", "CONTAINER_PATHS", "DEBUG_ADDR", "HTPASSWD_REALM", "SEALER_SED_TOKEN",
    "STALE_MARKER", "STALE_CHECK", "DRAIN_TIMEOUT",
]

# The debug listener (pprof, /metrics) is unauthenticated: the config binds it to loopback. Note
# that sealer's script sets REGISTRY_HTTP_DEBUG_ADDR=0.0.0.0:5002, which overrides this.
DEBUG_ADDR = "127.0.0.1:5002"
# sealer's script sets REGISTRY_AUTH_HTPASSWD_REALM="Registry Realm", which overrides this.
HTPASSWD_REALM = "sealer-registry"
# What sealer's init-registry.sh replaces with its PORT argument everywhere in the config.
SEALER_SED_TOKEN = "5000"
# Where the registry finds its files inside sealer's container (see the module docstring).
CONTAINER_PATHS = {
    "storage": "/var/lib/registry",
    "certs": "/certs",
    "htpasswd": "/htpasswd",
}
# The stale gate of a warm standby: while this file exists in the registry's data volume
# (``<rootfs>/registry/.sealer-stale`` on the host, written by pull-data.sh --replica before a copy
# and removed after its stamp), distribution's file health check fails and the registry answers
# 503 on /v2/ and on every other route, so no client and no health checker takes a tag from a
# replica that lags master0. The path is the volume's mount point in sealer's container (what
# the registry process sees), not the config's rootdirectory: the host file is in the volume
# whatever a brought config names as its storage root.
STALE_MARKER = ".sealer-stale"
STALE_CHECK = {"file": f"{CONTAINER_PATHS['storage']}/{STALE_MARKER}", "interval": "1s"}
# A registry stopped with SIGTERM (the lab's stop-registry.sh, `docker stop` in
# scripts/lib/registry.sh) drains for up to this long: distribution (>= 2.7, http.draintimeout)
# closes its listener at once, so nodes' entry points take new connections to another server,
# and lets the requests it is serving finish. Without it the registry exits on SIGTERM in the
# middle of a request: a docker pull behind the entry point failed with EOF in 1 restart of 6
# (tests/lab/test_entry_handover.py), as the recovery restarts the promoted standby's registry.
DRAIN_TIMEOUT = "10s"


def sed_port_problem(port: int) -> str | None:
    """Why ``port`` breaks under sealer's ``sed s/5000/PORT/g``, or None when it does not.

    The listen address ``:<port>`` must come out of the sed unchanged: a port that contains
    ``5000`` (15000, 50001...) other than 5000 itself would grow on every launch.
    """
    if SEALER_SED_TOKEN in str(port) and port != int(SEALER_SED_TOKEN):
        grown = f":{port}".replace(SEALER_SED_TOKEN, str(port))
        return (f"{port} contains '{SEALER_SED_TOKEN}': sealer's init-registry.sh runs "
                f"`sed -i s/{SEALER_SED_TOKEN}/{port}/g` on etc/registry_config.yml, which turns "
                f"':{port}' into '{grown}'; use 5000 or a port without '{SEALER_SED_TOKEN}'")
    return None


def _check(domain: str, port: int) -> None:
    if not domain or any(c.isspace() or c in "/:\0" for c in domain):
        raise ValueError(f"invalid registry domain {domain!r}")
    if SEALER_SED_TOKEN in domain:
        raise ValueError(
            f"registry domain {domain!r} contains '{SEALER_SED_TOKEN}': sealer's init-registry.sh "
            f"replaces every '{SEALER_SED_TOKEN}' in etc/registry_config.yml with the port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    problem = sed_port_problem(port)
    if problem:
        raise ValueError(f"registry port {problem}")


def registry_config(*, domain: str, port: int, tls: bool, auth: bool) -> dict[str, Any]:
    """The configuration as a dict (see ``render_registry_yml``)."""
    _check(domain, port)
    http: dict[str, Any] = {
        "addr": f":{port}",
        "debug": {"addr": DEBUG_ADDR, "prometheus": {"enabled": True, "path": "/metrics"}},
        "headers": {"X-Content-Type-Options": ["nosniff"]},
        "draintimeout": DRAIN_TIMEOUT,
    }
    if tls:
        certs = CONTAINER_PATHS["certs"]
        http["tls"] = {"certificate": f"{certs}/{domain}.crt", "key": f"{certs}/{domain}.key"}
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": CONTAINER_PATHS["storage"]},
            # Deletes stay off: the image store is the source of truth and is copied in whole.
            "delete": {"enabled": False},
        },
        "http": http,
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    if auth:
        config["auth"] = {"htpasswd": {"realm": HTPASSWD_REALM, "path": CONTAINER_PATHS["htpasswd"]}}
    return config


def render_registry_yml(*, domain: str, port: int, tls: bool, auth: bool) -> str:
    """distribution v2 config YAML, byte-stable for the same arguments (keys sorted).

    Paths are those inside sealer's registry container: storage ``/var/lib/registry`` (the
    VOLUME), TLS ``/certs/<domain>.crt|.key`` (when ``tls``), htpasswd ``/htpasswd`` (when
    ``auth``). Listens on ``:<port>``; debug/metrics on ``127.0.0.1:5002``. Raises ``ValueError``
    for a domain or port that sealer's ``sed s/5000/PORT/g`` would alter.
    """
    config = registry_config(domain=domain, port=port, tls=tls, auth=auth)
    text = yaml.safe_dump(config, sort_keys=True, default_flow_style=False, allow_unicode=False)
    if yaml.safe_load(text) != config:  # pragma: no cover - guards against YAML surprises
        raise AssertionError("rendered registry config does not round-trip")
    # The invariant itself: sealer's sed with our port is a no-op on our file.
    if text.replace(SEALER_SED_TOKEN, str(port)) != text:  # pragma: no cover - _check covers it
        raise AssertionError("sealer's sed s/5000/PORT/g would change the rendered config")
    return text


def read_only_registry_yml(text: str) -> str:
    """The registry config ``text`` (ours or a brought one) with distribution's read-only mode on
    (``storage.maintenance.readonly.enabled: true``): the registry serves pulls from its storage
    and answers every upload and delete with 405 (UNSUPPORTED). A warm standby runs it on its
    replica of the data, so no write lands anywhere but on master0.

    It also gets the stale gate: distribution's file health check on ``STALE_CHECK`` (added to a
    brought config's ``health.file`` list unless it is there already), and ``http.draintimeout``
    (``DRAIN_TIMEOUT`` unless the config sets one): the recovery stops this registry to launch
    it read-write, and nodes' transfers from it must finish first.

    Keys sorted like ``render_registry_yml``; sealer's sed stays a no-op when it was one on
    ``text`` (the added keys hold no digit)."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ValueError("the registry config is not a YAML mapping")
    storage = doc.setdefault("storage", {})
    if not isinstance(storage, dict):
        raise ValueError("the registry config's storage is not a mapping")
    maintenance = storage.get("maintenance")
    if not isinstance(maintenance, dict):
        maintenance = storage["maintenance"] = {}
    readonly = maintenance.get("readonly")
    if not isinstance(readonly, dict):
        readonly = maintenance["readonly"] = {}
    readonly["enabled"] = True
    health = doc.get("health")
    if not isinstance(health, dict):
        health = doc["health"] = {}
    files = health.get("file")
    if not isinstance(files, list):
        files = health["file"] = []
    if not any(isinstance(f, dict) and f.get("file") == STALE_CHECK["file"] for f in files):
        files.append(dict(STALE_CHECK))
    http = doc.get("http")
    if not isinstance(http, dict):
        http = doc["http"] = {}
    http.setdefault("draintimeout", DRAIN_TIMEOUT)
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=False)


def is_read_only(text: str) -> bool:
    """Whether the registry config ``text`` turns distribution's read-only mode on."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    node: Any = doc
    for key in ("storage", "maintenance", "readonly", "enabled"):
        if not isinstance(node, dict):
            return False
        node = node.get(key)
    return node is True


# Keys of a distribution config whose values are credentials (http.secret, storage drivers'
# access keys, redis and proxy passwords): a brought config is kept in plaintext, so it must
# hold none.
_SECRET_KEYS = frozenset({"secret", "password", "accesskey", "secretkey", "accountkey",
                          "clientsecret", "keyid", "privatekey"})


def _secret_key_paths(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if str(key).lower() in _SECRET_KEYS and value not in (None, ""):
                found.append(here)
            found += _secret_key_paths(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _secret_key_paths(value, f"{path}[{i}]")
    return found


def brought_config_problems(text: str, port: int) -> list[str]:
    """Why a registry config brought as-is (an adopted cluster's ``etc/registry_config.yml``)
    cannot be written and launched unchanged; empty when it can.

    It must be a YAML mapping; sealer's ``sed s/5000/PORT/g`` must leave it unchanged (else every
    launch rewrites it and it never equals what the program wrote); and it must hold no
    credential (it is stored in plaintext in the stack file and in a ConfigMap).
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"is not valid YAML ({str(exc).splitlines()[0]})"]
    if not isinstance(doc, dict):
        return ["is not a YAML mapping (a distribution registry config)"]
    problems = []
    if text.replace(SEALER_SED_TOKEN, str(port)) != text:
        problems.append(f"holds '{SEALER_SED_TOKEN}' while the port is {port}: sealer's "
                        f"init-registry.sh runs `sed -i s/{SEALER_SED_TOKEN}/{port}/g` on it at "
                        "every launch")
    secrets = _secret_key_paths(doc)
    if secrets:
        problems.append(f"holds credentials ({', '.join(secrets)}); it is kept in plaintext: "
                        "leave registry.config out to use the program's own config")
    return problems
