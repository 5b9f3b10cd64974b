"""Generator of real registry data for the image store (docs/design.md "Image store").

Each image is pushed through the distribution HTTP API into a real `docker-registry` that runs for
the occasion on 127.0.0.1 (a free port) with its storage root in `<store>/<hex>.partial`, so every
blob, link and manifest is the registry's own. Layers are uncompressed tar files holding random
(incompressible) bytes, so the data is also pullable by a real client. image_id = sha256 of the image
config blob of the image's first (main) repository.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from pathlib import Path

from lab.hosts import DEFAULT_STATE, LabError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
CHUNK = 1 << 20
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 512KiB, 2MiB, 1GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def layer_sizes(total: int, layers: int, rng: random.Random, min_layer: int = 1024,
                max_layer: int = 200 << 20) -> list[int]:
    """Split `total` bytes into about `layers` layers of spread-out sizes within [min, max]
    (more layers when max would be exceeded), like real images: a few big, several small."""
    layers = max(1, layers, -(-total // max_layer))
    weights = [rng.lognormvariate(0, 2.0) for _ in range(layers)]
    scale = total / sum(weights)
    sizes = [min(max_layer, max(min_layer, int(w * scale))) for w in weights]
    # Push the rounding / clamping difference into layers that still have room.
    diff = total - sum(sizes)
    for i in sorted(range(layers), key=lambda i: -sizes[i]):
        if diff == 0:
            break
        step = min(diff, max_layer - sizes[i]) if diff > 0 else max(diff, min_layer - sizes[i])
        sizes[i] += step
        diff -= step
    return sizes


class Registry:
    """A throwaway `docker-registry serve` on 127.0.0.1:<free port> storing into `root`."""

    def __init__(self, root: Path, workdir: Path):
        self.root = root
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "Registry":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cfg = self.workdir / "registry.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: lab-images-generator\n")
        self.log = open(self.workdir / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.request("GET", "/v2/")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise LabError("temporary registry did not start: "
                       + (self.workdir / "registry.log").read_text()[-2000:])

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                ) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def push_blob(self, repo: str, digest: str, path: Path | None = None,
                  data: bytes | None = None) -> None:
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            raise LabError(f"start upload {repo}: {status} {body[:300]!r}")
        loc = urllib.parse.urlsplit(headers["location"])
        query = loc.query + ("&" if loc.query else "") + urllib.parse.urlencode({"digest": digest})
        size = path.stat().st_size if path else len(data)
        hdrs = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if path:
            with open(path, "rb") as f:
                status, _, body = self.request("PUT", f"{loc.path}?{query}", f, hdrs)
        else:
            status, _, body = self.request("PUT", f"{loc.path}?{query}", data, hdrs)
        if status != 201:
            raise LabError(f"upload {digest} to {repo}: {status} {body[:300]!r}")

    def push_manifest(self, repo: str, tag: str, manifest: bytes) -> str:
        status, headers, body = self.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                                             {"Content-Type": OCI_MANIFEST})
        if status != 201:
            raise LabError(f"put manifest {repo}:{tag}: {status} {body[:300]!r}")
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        if headers.get("docker-content-digest") != digest:
            raise LabError(f"registry digest {headers.get('docker-content-digest')} != {digest}")
        return digest


def write_layer(path: Path, size: int, rng: random.Random | None, name: str) -> tuple[str, int]:
    """An uncompressed tar with one file of random bytes, about `size` bytes in all."""
    payload = max(0, size - 512 - 1024)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        def out(b: bytes) -> None:
            h.update(b)
            f.write(b)
        info = tarfile.TarInfo(name)
        info.size = payload
        info.mode = 0o644
        info.mtime = 0
        out(info.tobuf(format=tarfile.GNU_FORMAT))
        left = payload
        while left:
            n = min(CHUNK, left)
            out(rng.randbytes(n) if rng else os.urandom(n))
            left -= n
        out(b"\0" * ((-payload) % 512) + b"\0" * 1024)
    return "sha256:" + h.hexdigest(), path.stat().st_size


def build_image(store: Path, work: Path, spec: list[tuple[str, str, int, int]], label: str,
                rng: random.Random | None, min_layer: int, max_layer: int) -> dict:
    """spec: [(repository, tag, total bytes, layers)]; the first entry's config is the image id."""
    seed_rng = rng or random.Random(os.urandom(16))
    partial = store / f".partial-{os.getpid()}-{label}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    refs, image_id, total = [], None, 0
    try:
        with Registry(partial, work) as reg:
            for repo, tag, size, nlayers in spec:
                layers = []
                diff_ids = []
                for i, lsize in enumerate(layer_sizes(size, nlayers, seed_rng, min_layer,
                                                      max_layer)):
                    lpath = work / "layer.tar"
                    digest, real = write_layer(lpath, lsize, rng, f"data/{repo.replace('/', '_')}-{i}")
                    reg.push_blob(repo, digest, path=lpath)
                    lpath.unlink()
                    layers.append({"mediaType": OCI_LAYER, "digest": digest, "size": real})
                    diff_ids.append(digest)
                    total += real
                config = json.dumps({
                    "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                    "config": {"Labels": {"io.sealer.lab.image": label,
                                          "io.sealer.lab.nonce": f"{seed_rng.getrandbits(64):016x}"},
                               "Cmd": ["/bin/true"]},
                    "rootfs": {"type": "layers", "diff_ids": diff_ids},
                    "history": [{"created_by": f"lab layer {i}"} for i in range(len(layers))],
                }, sort_keys=True, separators=(",", ":")).encode()
                config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
                reg.push_blob(repo, config_digest, data=config)
                manifest = json.dumps({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                               "size": len(config)},
                    "layers": layers,
                }, indent=2).encode()
                digest = reg.push_manifest(repo, tag, manifest)
                refs.append({"repository": repo, "tag": tag, "digest": digest})
                image_id = image_id or config_digest
        for uploads in (partial / "docker/registry/v2/repositories").glob("**/_uploads"):
            if uploads.is_dir() and not any(uploads.iterdir()):
                uploads.rmdir()  # the registry's empty scratch dirs, not image data
        hexid = image_id.split(":", 1)[1]
        (partial / "image.json").write_text(
            json.dumps({"image_id": image_id, "refs": refs}, indent=2) + "\n")
        final = store / hexid
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {"image_id": image_id, "refs": refs, "bytes": total, "path": str(store / hexid)}


def generate(store: Path, apps: int = 3, app_size: int = 2 << 20, layers: int = 3,
             cluster_size: int = 4 << 20, seed: int | None = 0, min_layer: int = 1024,
             max_layer: int = 200 << 20, history: Path | None = None,
             history_type: str = "boot") -> dict:
    store = Path(store).resolve()
    store.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed) if seed is not None else None
    with tempfile.TemporaryDirectory(prefix="lab-images-", dir=store.parent) as tmp:
        work = Path(tmp)
        small = min(cluster_size // 8, 1 << 20)
        cluster = build_image(store, work, [
            ("sealer/cluster-base", "v1", cluster_size - small, layers),
            ("library/pause", "3.9", small, 1),
        ], "cluster", rng, min_layer, max_layer)
        app_images = []
        for i in range(apps):
            img = build_image(store, work, [(f"library/app{i}", "v1", app_size, layers)],
                              f"app{i}", rng, min_layer, max_layer)
            img["name"] = f"app{i}"
            app_images.append(img)
    doc = {
        "type": history_type,
        "applications": [{
            "name": img["name"], "image_id": img["image_id"],
            "type": "kube" if i % 2 == 0 else "helm",
            "launch_cmd": (f"kubectl apply -f manifests/{img['name']}.yaml" if i % 2 == 0
                           else f"helm upgrade --install {img['name']} charts/{img['name']}"),
            "version": "v1",
        } for i, img in enumerate(app_images)],
        "launch": {"app_names": [img["name"] for img in app_images]},
    }
    summary = {"store": str(store), "cluster_image_id": cluster["image_id"],
               "cluster": cluster, "apps": app_images, "history": None}
    if history is not None:
        history = Path(history).resolve()
        history.parent.mkdir(parents=True, exist_ok=True)
        history.write_text(json.dumps(doc, indent=2) + "\n")
        summary["history"] = str(history)
        (history.parent / "images.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["application"] = doc
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, help="image store (default <state>/images)")
    p.add_argument("--apps", type=int, default=3)
    p.add_argument("--app-size", type=parse_size, default=parse_size("2MiB"))
    p.add_argument("--layers", type=int, default=3, help="layers per image (more if max-layer needs)")
    p.add_argument("--cluster-size", type=parse_size, default=parse_size("4MiB"))
    p.add_argument("--min-layer", type=parse_size, default=parse_size("1KiB"))
    p.add_argument("--max-layer", type=parse_size, default=parse_size("200MiB"))
    p.add_argument("--seed", default="0", help="integer, or 'random' for fresh content each run")
    p.add_argument("--history", type=Path,
                   help="application.json path (default <state>/application.json)")
    p.add_argument("--history-type", default="boot", help='value of the document\'s "type"')


def main(a: argparse.Namespace, lab) -> dict:
    state = lab.state if lab is not None else DEFAULT_STATE
    t0 = time.monotonic()
    out = generate(a.store or state / "images", a.apps, a.app_size, a.layers, a.cluster_size,
                   None if a.seed == "random" else int(a.seed), a.min_layer, a.max_layer,
                   a.history or state / "application.json", a.history_type)
    out["seconds"] = round(time.monotonic() - t0, 2)
    out.pop("application")
    return out
