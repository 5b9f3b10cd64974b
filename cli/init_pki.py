"""`init-pki`: make the registry CA once and keep it in the stack config (key as a secret)."""

from __future__ import annotations

import argparse
import hashlib

import yaml
from cryptography.hazmat.primitives import serialization

from cli.common import EXIT_OK, CliError, add_stack_arguments, guarded
from cli.engine import Engine
from cli.session import Session
from config import PROJECT
from material import pki
from material.certs import der_of, load_pem_certificate

NAME = "init-pki"
HELP = "generate the registry CA once into the stack config (ca_cert plain, ca_key secret)"
DESCRIPTION = """\
Generate the registry's CA (EC P-256, 10 years) and store it in the stack config through the
Pulumi engine: registry.tls.ca_cert in plaintext, registry.tls.ca_key as a Pulumi secret. Both
values are passed to `pulumi config set --path` on stdin, never on a command line.

Every node trusts this CA, so an existing one is never replaced unless --force is given (then
the next `pulumi up` installs the new CA on every live host and re-issues the leaf; hosts that
are down keep the old one until they rejoin). Needs the engine's environment: `pulumi` on PATH,
the backend (PULUMI_BACKEND_URL or `pulumi login`) and the passphrase (PULUMI_CONFIG_PASSPHRASE).
"""
EPILOG = """\
example:
  $ python -m cli init-pki --stack demo
  ok: stack demo: registry CA CN=sealer-registry-ca, EC P-256, valid until 2035-11-24,
      sha256 3f1c...; registry.tls.ca_key stored as a secret
"""


def register(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument("--force", action="store_true",
                        help="replace an existing CA (every node must then trust the new one)")


def existing_tls(stack_file) -> tuple[dict, bool]:
    """(registry.tls as in the stack file, insecure_mode) read raw: before init-pki the stack is
    not valid yet (tls is required), so the models cannot load it."""
    try:
        doc = yaml.safe_load(stack_file.read_text()) or {}
    except FileNotFoundError:
        raise CliError(f"stack file {stack_file} not found (create it with `pulumi stack init`, "
                       "or check --stack/--project-dir)") from None
    except (OSError, yaml.YAMLError) as e:
        raise CliError(f"cannot read {stack_file}: {e}") from None
    registry = (doc.get("config") or {}).get(f"{PROJECT}:registry") or {}
    if not isinstance(registry, dict):
        raise CliError(f"{stack_file}: {PROJECT}:registry is not a mapping")
    tls = registry.get("tls") or {}
    insecure = (registry.get("local_registry") or {}).get("insecure_mode") is True
    return (tls if isinstance(tls, dict) else {}), insecure


def describe(cert_pem: str) -> str:
    cert = load_pem_certificate(cert_pem)
    der = der_of(cert_pem)
    return (f"{cert.subject.rfc4514_string()}, EC P-256, valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, sha256 {hashlib.sha256(der).hexdigest()[:16]}")


def check_stored(engine: Engine) -> None:
    """Read back through the engine: the stored key must be the one of the stored cert."""
    stored_key = serialization.load_pem_private_key(engine.get_value("registry.tls.ca_key").encode(), None)
    stored_cert = load_pem_certificate(engine.get_value("registry.tls.ca_cert"))

    def spki(key) -> bytes:
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    if spki(stored_key.public_key()) != spki(stored_cert.public_key()):
        raise CliError("the engine returned a CA key that does not match the CA certificate")


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    with Session(args) as session:
        return init_pki(session, args.force)


def init_pki(session: Session, force: bool) -> int:
    stack_file = session.stack_file
    tls, insecure = existing_tls(stack_file)
    if insecure:
        raise CliError("registry.local_registry.insecure_mode is true: the registry serves plain "
                       "HTTP and needs no CA")
    present = [k for k in ("ca_cert", "ca_key") if tls.get(k) is not None]
    if present and not force:
        raise CliError(f"stack {session.stack} already has registry.tls.{present[0]}: nodes trust "
                       "that CA; pass --force to replace it")
    engine = session.engine
    cert, key = pki.generate_ca()
    saved = stack_file.read_bytes()
    try:  # both values or neither: a CA key that does not match its cert would break every up
        engine.set_value("registry.tls.ca_key", key, secret=True)
        engine.set_value("registry.tls.ca_cert", cert)
        check_stored(engine)
    except BaseException:
        stack_file.write_bytes(saved)
        raise
    verb = "replaced" if present else "stored"
    print(f"ok: stack {session.stack}: registry CA {describe(cert)}; registry.tls.ca_key {verb} as a secret")
    return EXIT_OK
