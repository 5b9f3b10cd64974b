"""`python -m lab stackfile`: write the lab's `Pulumi.lab.yaml` for the program.

Plain values are written as YAML; every secret goes through the real engine
(`pulumi config set --secret --path KEY`, value on stdin) with passphrase `sealer-lab`, so the
`secure:` values and `encryptionsalt` are the engine's own. The stack is created in the lab's file
backend (`<state>/pulumi-state`) if it does not exist. Needs `lab.toolchain` (the built engine); a
lab without it still comes `up`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from lab import store as lab_store
from lab.hosts import REPO, Lab, LabError

STACK = "lab"
PASSPHRASE = "sealer-lab"


def lab_ca(state: Path) -> tuple[str, str]:
    """The lab's registry CA (ECDSA P-256), made once under <state>/pki."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pki = state / "pki"
    crt_path, key_path = pki / "ca.crt", pki / "ca.key"
    if crt_path.exists() and key_path.exists():
        return crt_path.read_text(), key_path.read_text()
    pki.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealer-registry lab CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    key_path.write_text(key_pem)
    os.chmod(key_path, 0o600)
    crt_path.write_text(cert.public_bytes(serialization.Encoding.PEM).decode())
    return crt_path.read_text(), key_pem


def lab_password(state: Path) -> str:
    path = state / "registry-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18))
        os.chmod(path, 0o600)
    return path.read_text().strip()


def stack_config(lab: Lab, master0: str | None = None, deploy_hosts: list[str] | None = None,
                 distribution: str = "pre", username: str = "admin") -> tuple[dict, dict]:
    """(plain config under the project namespace, {path: secret value})."""
    inv = lab.inventory()
    masters = [h["ip"] for h in inv["hosts"] if h["role"] == "master"]
    nodes = [h["ip"] for h in inv["hosts"] if h["role"] == "node"]
    if not masters:
        raise LabError("the lab has no master")
    master0 = master0 or masters[0]
    ca_cert, ca_key = lab_ca(lab.state)
    plain = {
        "master0": master0,
        "down_hosts": [],
        "distribution": distribution,
        "cluster": {
            "name": inv["cluster"], "data_root": inv["data_root"], "masters": masters,
            "nodes": nodes,
            "ssh": {"user": "root", "port": 22,
                    "host_keys": {h["ip"]: h["host_key"] for h in inv["hosts"]}},
        },
        "registry": {
            "domain": "sea.hub", "port": 5000, "username": username,
            "local_registry": {"deploy_hosts": deploy_hosts or [master0], "insecure_mode": False},
            "tls": {"ca_cert": ca_cert},
        },
        "kubernetes": {"kubeconfig_path": str(lab.state / "kubeconfig"), "context": "",
                       "cluster_identifier": inv["cluster"]},
    }
    images = lab.state / "images.json"
    if not images.exists():
        raise LabError(f"no {images}: run `python -m lab images` first (the stack's apps section "
                       "names the image store, application.json and the cluster image)")
    summary = json.loads(images.read_text())
    plain["apps"] = {"history_file": summary["history"],
                     "image_store": lab_store.config_for(lab.state, summary["store"]),
                     "cluster_image_id": summary["cluster_image_id"]}
    secret = {
        "cluster.ssh.private_key": lab.key_path.read_text(),
        "registry.password": lab_password(lab.state),
        "registry.tls.ca_key": ca_key,
        **lab_store.SECRETS,
    }
    return plain, secret


def _pulumi_env(lab: Lab, pulumi_home: Path) -> dict:
    try:
        from lab import toolchain
    except ImportError as e:
        raise LabError("lab.toolchain is missing: the engine toolchain (`make toolchain`) is "
                       "needed to encrypt the stack's secrets") from e
    env = toolchain.env(dict(os.environ))
    if not shutil.which("pulumi", path=env.get("PATH")):
        raise LabError("no `pulumi` on the toolchain PATH: run `make toolchain` first "
                       f"(PATH={env.get('PATH')})")
    backend = lab.state / "pulumi-state"
    backend.mkdir(parents=True, exist_ok=True)
    env.update(PULUMI_BACKEND_URL=f"file://{backend}", PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
               PULUMI_HOME=str(pulumi_home))
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    return env


def _pulumi(env: dict, cwd: Path, *args: str, input: str | None = None) -> str:
    p = subprocess.run(["pulumi", "--non-interactive", *args], cwd=cwd, env=env, input=input,
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise LabError(f"pulumi {' '.join(args)} -> exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def write_stack_file(lab: Lab | None = None, out: Path | None = None,
                     project_dir: Path = REPO, **overrides) -> Path:
    """Write `<project_dir>/Pulumi.lab.yaml` (or `out`) for the current lab. Returns its path."""
    from config import PROJECT  # here: `python -m lab` needs no config models to bring hosts up

    lab = lab or Lab()
    out = Path(out or project_dir / f"Pulumi.{STACK}.yaml")
    plain, secret = stack_config(lab, **overrides)
    lab_store.ensure(lab)  # the store registry the stack names serves the lab's images
    with tempfile.TemporaryDirectory(prefix="lab-stackfile-") as tmp:
        work = Path(tmp)
        env = _pulumi_env(lab, Path(os.environ.get("PULUMI_HOME") or work / "pulumi-home"))
        shutil.copyfile(project_dir / "Pulumi.yaml", work / "Pulumi.yaml")
        stack_file = work / f"Pulumi.{STACK}.yaml"
        if out.exists():  # keeps encryptionsalt, so an existing stack's state stays readable
            shutil.copyfile(out, stack_file)
        _pulumi(env, work, "stack", "select", "--create", STACK, "--secrets-provider", "passphrase")
        doc = yaml.safe_load(stack_file.read_text()) if stack_file.exists() else None
        doc = doc or {}
        doc["config"] = {f"{PROJECT}:{k}": v for k, v in plain.items()}
        stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        for path, value in secret.items():
            _pulumi(env, work, "config", "set", "--secret", "--path", "--stack", STACK, path,
                    input=value)
        back = _pulumi(env, work, "config", "get", "--path", "--stack", STACK, "registry.password")
        if back.strip() != secret["registry.password"]:
            raise LabError("pulumi config get did not return the password just set")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stack_file, out)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="stack file (default <repo>/Pulumi.lab.yaml)")
    p.add_argument("--master0", help="default: the first master")
    p.add_argument("--deploy-hosts", help="comma-separated IPs (default: master0)")
    p.add_argument("--distribution", default="pre", choices=["pre", "post"])


def main(a: argparse.Namespace, lab: Lab) -> str:
    return str(write_stack_file(
        lab, a.out, master0=a.master0, distribution=a.distribution,
        deploy_hosts=a.deploy_hosts.split(",") if a.deploy_hosts else None))
