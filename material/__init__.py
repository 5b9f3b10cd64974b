"""Registry material: certificates, htpasswd and the registry config, as pure deterministic functions.

No Pulumi, no network, no files: everything is returned as strings. ``build_material`` is the
façade the program uses; it is recomputed on every run and yields identical output for an
unchanged stack config (see ``material.pki`` and ``material.htpasswd`` for how).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from . import htpasswd as _htpasswd
from . import pki as _pki
from .certs import der_of
from .registry_config import brought_config_problems, render_registry_yml

__all__ = ["RegistryMaterial", "build_material"]


@dataclass(frozen=True)
class RegistryMaterial:
    """What goes onto the hosts. Cert fields are ``None`` in insecure mode, ``htpasswd`` is
    ``None`` when auth is off.

    ``ca_cert`` is what nodes trust (``certs.d/<domain>:<port>/ca.crt``); ``cert``/``key`` go to
    ``<rootfs>/certs/<domain>.crt|.key``; ``htpasswd`` to ``<rootfs>/etc/registry_htpasswd``;
    ``registry_yml`` to ``<rootfs>/etc/registry_config.yml`` (read by sealer's init-registry.sh;
    never to ``etc/registry.yml``, sealer v0.8's own settings file). ``ca_fingerprint`` is the sha256 hex of
    ``ca_cert`` (for status output and change detection).
    """

    ca_cert: str | None
    cert: str | None
    key: str | None
    htpasswd: str | None
    registry_yml: str
    ca_fingerprint: str | None
    # "sealer-fill:<password>" of the registry's machine user for the fill from the image store
    # (None when the htpasswd is brought or auth is off). See FILL_USER.
    fill_login: str | None = None

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def auth(self) -> bool:
        return self.htpasswd is not None


def _check_issued_by(cert_pem: str, ca_cert_pem: str) -> None:
    cert = _pki._load_cert(cert_pem, "registry.tls.cert")
    ca = _pki._load_cert(ca_cert_pem, "registry.tls.ca_cert")
    if der_of(cert_pem) == der_of(ca_cert_pem):
        return  # sealer's CA used as the server certificate: the same certificate
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # ValueError, TypeError or InvalidSignature
        raise ValueError(
            "registry.tls.cert is not issued by registry.tls.ca_cert; nodes trusting that CA "
            f"would reject the registry ({type(exc).__name__}: {exc})"
        ) from None


def build_material(
    *,
    domain: str,
    port: int,
    deploy_ips: list[str],
    insecure: bool,
    username: str | None,
    password: str | None,
    ca_cert: str | None = None,
    ca_key: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    htpasswd: str | None = None,
    registry_config: str | None = None,
) -> RegistryMaterial:
    """Compute the registry material for the stack config. Deterministic; raises ``ValueError``.

    TLS: ``insecure`` → no certificates. Else a brought ``cert``+``key`` is used as-is (checked
    to match; nodes trust ``ca_cert`` if given — the cert must then be issued by it — else the
    cert itself, i.e. sealer's self-signed cert). Else a leaf for ``domain`` and ``deploy_ips``
    is issued from ``ca_cert``/``ca_key``.

    Auth: a brought ``htpasswd`` is used as-is (must be bcrypt; if a username/password is also
    given it must accept them, since nodes log in with them). Else with ``username`` and
    ``password`` one line is derived, salted from the CA key (or the brought leaf key). No
    username and no htpasswd → auth off.

    Config: a brought ``registry_config`` (an adopted cluster's own ``etc/registry_config.yml``)
    is written as-is, so the registry sealer started from it keeps serving; else the program
    renders its own (``render_registry_yml``).
    """
    if (username is None) != (password is None) or (username == "") != (password == ""):
        raise ValueError("registry username and password must be given together")
    if username == "":
        username = password = None
    if (cert is None) != (key is None):
        raise ValueError("registry.tls.cert and registry.tls.key must be given together")

    ca_out = cert_out = key_out = None
    if not insecure:
        if cert is not None:
            cert_out, key_out = _pki.adopt(cert, key)
            if ca_cert is not None:
                _check_issued_by(cert, ca_cert)
                ca_out = ca_cert
            else:
                ca_out = cert
        else:
            if ca_cert is None or ca_key is None:
                raise ValueError(
                    "registry.tls.ca_cert and ca_key are required unless insecure_mode "
                    "(run `python -m cli init-pki`) or a cert and key are brought"
                )
            cert_out, key_out = _pki.issue_leaf(ca_cert, ca_key, domain, list(deploy_ips))
            ca_out = ca_cert

    htpasswd_out: str | None = None
    fill_login: str | None = None
    if htpasswd is not None:
        users = _htpasswd.validate_htpasswd(htpasswd)
        if username is not None:
            if username not in users or not _htpasswd.verify(htpasswd, username, password):
                raise ValueError(
                    f"registry.htpasswd does not accept registry.username {username!r} with the "
                    "configured password; nodes would fail to log in"
                )
        htpasswd_out = htpasswd
    elif username is not None:
        salt_key = _salt_key(ca_key, key, domain, password)
        htpasswd_out = _htpasswd.htpasswd_line(username, password, salt_key) + "\n"
        if username != FILL_USER:
            fill_password = _fill_password(salt_key, password)
            htpasswd_out += _htpasswd.htpasswd_line(FILL_USER, fill_password, salt_key,
                                                    rounds=FILL_ROUNDS) + "\n"
            fill_login = f"{FILL_USER}:{fill_password}"

    if registry_config is not None:
        problems = brought_config_problems(registry_config, port)
        if problems:
            raise ValueError(f"registry.config {problems[0]}")
        registry_yml = registry_config
    else:
        registry_yml = render_registry_yml(
            domain=domain, port=port, tls=cert_out is not None, auth=htpasswd_out is not None)
    return RegistryMaterial(
        ca_cert=ca_out,
        cert=cert_out,
        key=key_out,
        htpasswd=htpasswd_out,
        registry_yml=registry_yml,
        ca_fingerprint=_pki.fingerprint(ca_out) if ca_out is not None else None,
        fill_login=fill_login,
    )


# The fill from the image store pushes ~5 authenticated requests per blob into master0's registry,
# and distribution's htpasswd auth runs bcrypt on every request: at the operator's cost 10 that is
# ~75 ms of master0's CPU a request (measured: 79 CPU s for 1 GiB in 195 blobs, 13x the tar | ssh
# time). The fill logs in as this machine user instead, whose password is 256 random-looking bits
# derived from the salts' secret and the operator's password (HMAC): key stretching protects guessable passwords,
# and this one is not guessable, so cost 4 (~1 ms) loses nothing. It exists only in the htpasswd
# (as a hash) and on the fill step's secret stdin.
FILL_USER = "sealer-fill"
FILL_ROUNDS = 4


def _fill_password(salt_key: bytes, password: str) -> str:
    """Rotates with the operator's password (and the CA key): a rotation after a leak covers it."""
    digest = hmac.new(salt_key, b"sealer-registry fill password\0" + password.encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _salt_key(ca_key: str | None, key: str | None, domain: str, password: str) -> bytes:
    """Secret HMAC key for the htpasswd salt: the CA key, else the brought leaf key.

    Insecure mode may have neither; then the salt is keyed by the password and domain. That salt
    is still stable and per-user, just not secret — acceptable where the password travels in
    clear HTTP on every request anyway.
    """
    if ca_key is not None:
        return _pki.canonical_key_bytes(ca_key)
    if key is not None:
        return _pki.canonical_key_bytes(key)
    return b"sealer-registry insecure htpasswd salt\0" + domain.encode() + b"\0" + password.encode()
