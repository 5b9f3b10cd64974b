"""Shared by the runtime and VIP lab tests: masters serving generated images the way sealer's
registry does (sealer's cert as CA and server cert, htpasswd, basefs' registry config, started by
the rootfs' init-registry.sh), and sealer's trust on a client (``<domain>.crt`` under
/etc/docker/certs.d, as pkg/registry/local.go@v0.11.0:239-253 writes it)."""
from __future__ import annotations

import shutil
from pathlib import Path

from lab import images
from lab.sealer_state import BASEFS_REGISTRY_CONFIG, sealer_htpasswd, sealer_self_signed

DOMAIN, PORT = "sea.hub", 5000
USER, PASSWORD = "sealer", "runtime-test-Passw0rd"
ROOTFS = "/var/lib/sealer/data/lab/rootfs"
DOCKER_CERTS = f"/etc/docker/certs.d/{DOMAIN}:{PORT}"


def generate(store: Path) -> list[dict]:
    """One small app image (2 layers) and the cluster image's two repos; their refs."""
    gen = images.generate(store, apps=1, app_size=1 << 20, layers=2, cluster_size=1 << 20,
                          seed=19, history=None)
    return [{**r, "path": img["path"]} for img in [gen["cluster"], *gen["apps"]]
            for r in img["refs"]]


def _write(lab, host: str, path: str, text: str, mode: int = 0o644) -> None:
    target = lab.host_path(host, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def serve(lab, masters: list[str], refs: list[dict]) -> str:
    """Each master runs sealer's registry on the same data and the same cert; returns the cert."""
    cert, key = sealer_self_signed(DOMAIN)
    htpasswd = sealer_htpasswd(USER, PASSWORD)
    for m in masters:
        _write(lab, m, f"{ROOTFS}/certs/{DOMAIN}.crt", cert)
        _write(lab, m, f"{ROOTFS}/certs/{DOMAIN}.key", key, 0o600)
        _write(lab, m, f"{ROOTFS}/etc/registry_config.yml", BASEFS_REGISTRY_CONFIG)
        _write(lab, m, f"{ROOTFS}/etc/registry_htpasswd", htpasswd)
        for path in {r["path"] for r in refs}:
            shutil.copytree(Path(path) / "docker", lab.host_path(m, f"{ROOTFS}/registry/docker"),
                            dirs_exist_ok=True)
        lab.run(m, f"cd {ROOTFS}/scripts && bash init-registry.sh {PORT} {ROOTFS}/registry {DOMAIN}",
                timeout=60)
    return cert


def stop_serving(lab, masters: list[str]) -> None:
    for m in masters:
        lab.run(m, f"bash {ROOTFS}/scripts/stop-registry.sh", check=False)


def trust(lab, host: str, cert: str) -> None:
    """sealer's trust file on a host, and nothing else under the domain's docker certs dir."""
    lab.run(host, f"rm -rf '{DOCKER_CERTS}'")
    _write(lab, host, f"{DOCKER_CERTS}/{DOMAIN}.crt", cert)


def map_domain(lab, host: str, ip: str) -> None:
    """sealer's hosts line (`<ip> <domain> #hostalias-set-by-sealer`), the only one for the domain."""
    lab.run(host, f"sed -i '/ {DOMAIN} /d' /etc/hosts; "
                  f"echo '{ip} {DOMAIN} #hostalias-set-by-sealer' >> /etc/hosts")


def ref_of(r: dict) -> str:
    return f"{DOMAIN}:{PORT}/{r['repository']}:{r['tag']}"
