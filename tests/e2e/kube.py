"""A minimal client of the lab's kube-apiserver, from an admin kubeconfig (client cert auth)."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import yaml


class Kube:
    def __init__(self, kubeconfig: str | Path, server: str | None = None):
        """``server``: another apiserver of the same cluster than the kubeconfig's (master0's,
        dead after a kill)."""
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = doc["clusters"][0]["cluster"]
        user = doc["users"][0]["user"]
        self.server = (server or cluster["server"]).rstrip("/")
        self._dir = tempfile.TemporaryDirectory(prefix="kube-")
        ca = Path(self._dir.name, "ca.crt")
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        cert = Path(self._dir.name, "client.crt")
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key = Path(self._dir.name, "client.key")
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.load_cert_chain(str(cert), str(key))

    def get(self, path: str) -> dict | None:
        """GET ``path``; None on 404."""
        try:
            with urllib.request.urlopen(self.server + path, context=self.context, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def configmap(self, name: str, namespace: str = "kube-system") -> dict | None:
        return self.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    def secret(self, name: str, namespace: str = "kube-system") -> dict | None:
        return self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")


def configmap_body(name: str, data: dict[str, str], namespace: str = "kube-system") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": data}


def create(kube: Kube, path: str, body: dict) -> dict:
    """POST ``body`` to ``path`` (a collection), as another client (sealer) would."""
    request = urllib.request.Request(kube.server + path, data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=kube.context, timeout=10) as r:
        return json.loads(r.read())
