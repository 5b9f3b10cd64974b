"""What sealer (and its users) do to a running cluster's registry data after the install, on the
lab's hosts: the changes the program's data steps must catch up with (issue 20, parts 1 and 3).

Each helper works on a cluster ``lab.sealer_state.make_sealer_state`` made (v0.11 flavours) and
updates its ``SealerCluster`` record the way sealer's own records change.

- ``sealer_run_app``: `sealer run <app image>` on a running cluster
  (cmd/sealer/cmd/cluster/installer.go@v0.11.0:55-160, AppInstaller.Install/prepareMaterials):
  the app image's rootfs goes to every host (pkg/imagedistributor/scp_distributor.go@v0.11.0:
  99-145, `Distribute`: files plus the flag `<rootfs>/cache/image/<id>`); its registry data goes
  to the registry deploy hosts, which are `masters[0]` only when `localRegistry.ha` is false and
  every master when it is true (installer.go:139-146), merged into `<rootfs>/registry` by a copy
  of the image's `registry/` dir, then the flag `<rootfs>/cache/registry/<id>` (scp_distributor.go
  :47-97, `DistributeRegistry`; a host whose flag exists is skipped); then the app's
  ImageExtension is appended to `~/.sealer/application.json` with json.MarshalIndent, O_APPEND,
  0600, no separator (pkg/application/appdriver.go@v0.11.0:128-160). So in non-HA mode the
  replicas the program keeps fall behind master0 until the next `up`.
- ``scale_up_master``: a master joined by `sealer scale-up -m` in HA mode
  (pkg/cluster-runtime/scale.go@v0.11.0:29-92 and pkg/registry/installer.go@v0.11.0:69-130,
  `Reconcile` -> `install` of the joined hosts): the scale-up's distributor holds only the
  cluster image's mount, so the new master's registry gets the cluster image's data and its flag,
  none of the apps run since, and is launched and joined to lvscare's real servers anyway. The
  lab's hosts exist from the start: the helper makes one master look like that (its registry
  data and `cache/registry` flags replaced by the cluster image's, its registry relaunched).
- ``push_to_master``: a push by a user to `sea.hub:5000` that lands on one master's registry (in
  HA, nodes reach the masters through the VIP, which sends the connection to one of them;
  pkg/registry/local.go@v0.11.0:148-237): a real push over HTTPS through that master's running
  registry (the blobs and manifests the registry writes itself), with no `cache/registry` flag
  (only sealer writes those).

The images added are made by ``make_image`` with lab/images.py (pushed through a real
`docker-registry`, so every digest is real).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import shlex
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab import images as lab_images
from lab import sealer_files as sf
from lab.hosts import Lab, LabError
from lab.sealer_state import SEALER_HOME, SealerCluster, _copy_registry_data, _write

OCI_MANIFEST = lab_images.OCI_MANIFEST


@dataclass(frozen=True)
class AddedImage:
    """An image made for a post-install change: its id (64 hex), its refs (REPO:TAG@DIGEST) and
    its registry tree (``<store>/<id>/docker``)."""

    name: str
    image_id: str
    refs: tuple[str, ...]
    store: Path

    @property
    def tree(self) -> Path:
        return self.store / self.image_id / "docker"

    @property
    def repo_tags(self) -> list[str]:
        return [r.split("@", 1)[0] for r in self.refs]


def make_image(store: Path, name: str, *, size: int = 192 << 10, layers: int = 2,
               seed: int | None = None) -> AddedImage:
    """A new image ``library/<name>:v1`` in ``store`` (lab/images.py: real digests)."""
    store = Path(store).resolve()
    store.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed) if seed is not None else None
    with tempfile.TemporaryDirectory(prefix="lab-image-", dir=store.parent) as tmp:
        built = lab_images.build_image(store, Path(tmp), [(f"library/{name}", "v1", size, layers)],
                                       name, rng, 1024, 200 << 20)
    image_id = built["image_id"].removeprefix("sha256:")
    refs = tuple(f"{r['repository']}:{r['tag']}@{r['digest']}" for r in built["refs"])
    return AddedImage(name, image_id, refs, store)


def _v011(state: SealerCluster) -> None:
    if not state.flavour.v011:
        raise LabError(f"{state.flavour.value}: sealer v0.8 keeps no flags or application log; "
                       "these helpers model v0.11")


def _flag(lab: Lab, ip: str, state: SealerCluster, kind: str, image_id: str) -> bool:
    """Writes `<rootfs>/cache/<kind>/<id>` (empty) unless it exists; True when written."""
    path = lab.host_path(ip, f"{state.rootfs}/cache/{kind}/{image_id}")
    if path.exists():
        return False
    _write(lab, ip, f"{state.rootfs}/cache/{kind}/{image_id}", "", 0o644)
    return True


def sealer_run_app(lab: Lab, state: SealerCluster, image: AddedImage, *,
                   app_type: str = "kube") -> list[str]:
    """`sealer run <image>` on the running cluster (module docstring); returns the hosts whose
    registry received its data (non-HA: master0 only). Updates ``state``: image_ids,
    app_images, cache_flags, application_log."""
    _v011(state)
    for ip in state.hosts:  # the rootfs copy and its flag, on every host
        _flag(lab, ip, state, "image", image.image_id)
    receivers = list(state.masters) if state.flavour.ha else [state.master0]
    got = []
    for ip in receivers:
        if lab.host_path(ip, f"{state.rootfs}/cache/registry/{image.image_id}").exists():
            continue  # sealer's cache hit: skipped
        _copy_registry_data(lab, ip, state.rootfs, image.store, image.image_id)
        _flag(lab, ip, state, "registry", image.image_id)
        state.cache_flags.setdefault(ip, []).append(image.image_id)
        got.append(ip)
    ext = sf.ImageExtension(type="app-installer",
                            applications=[sf.App(image.name, app_type, [f"{image.name}.yaml"], "v1")],
                            launch_app_names=[image.name])
    entry = sf.go_json_indent(ext.as_go())
    log = lab.host_path(state.master0, f"{SEALER_HOME}/application.json")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(entry)
    state.application_log += entry
    state.image_ids.append(image.image_id)
    state.app_images.append(f"docker.io/lab/{image.name}:v1")
    return got


def scale_up_master(lab: Lab, state: SealerCluster, ip: str, store: Path) -> None:
    """Make HA master ``ip`` hold what a scale-up gives it: the cluster image's registry data and
    flag only, its registry relaunched on that (module docstring). ``store``: the image store
    ``make_sealer_state`` was given (it holds the cluster image, ``state.image_ids[0]``)."""
    _v011(state)
    if not state.flavour.ha or ip not in state.masters:
        raise LabError(f"{ip}: scale_up_master models an HA master (flavour {state.flavour.value})")
    cluster_id = state.image_ids[0]
    q = shlex.quote
    lab.run(ip, f"cd {q(state.rootfs)}/scripts && if [ -x stop-registry.sh ]; then "
                "bash stop-registry.sh >/dev/null 2>&1 || true; fi; "
                f"rm -rf {q(state.rootfs)}/registry {q(state.rootfs)}/cache/registry")
    _copy_registry_data(lab, ip, state.rootfs, Path(store), cluster_id)
    _flag(lab, ip, state, "registry", cluster_id)
    state.cache_flags[ip] = [cluster_id]
    lab.run(ip, f"cd {q(state.rootfs)}/scripts && bash init-registry.sh {state.port} "
                f"{q(state.rootfs)}/registry {q(state.domain)}", timeout=60)


class _TlsTo(http.client.HTTPSConnection):
    """HTTPS to an IP, verified against the cluster's CA for the registry's domain (sealer's cert
    names the domain only): the TCP connection goes to ``ip``, TLS checks ``domain``."""

    def __init__(self, ip: str, port: int, domain: str, ca_pem: str):
        ctx = ssl.create_default_context(cadata=ca_pem)
        super().__init__(domain, port, context=ctx, timeout=120)
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def push_to_master(lab: Lab, state: SealerCluster, ip: str, image: AddedImage) -> list[str]:
    """A real push of ``image`` into master ``ip``'s running registry only (HTTPS to ip:port,
    TLS verified for the domain with sealer's CA, the cluster's login); returns the refs pushed.
    The registry answers each manifest with its digest: it must be the one the image has."""
    _v011(state)
    auth = {}
    if state.htpasswd is not None:
        token = base64.b64encode(f"{state.username}:{state.password}".encode()).decode()
        auth = {"Authorization": f"Basic {token}"}
    blobs = image.tree / "registry/v2/blobs/sha256"

    def request(method: str, path: str, body=None, headers=None):
        conn = _TlsTo(ip, state.port, state.domain, state.cert)
        try:
            conn.request(method, path, body=body, headers={**auth, **(headers or {})})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def blob(digest: str) -> bytes:
        hexd = digest.removeprefix("sha256:")
        return (blobs / hexd[:2] / hexd / "data").read_bytes()

    pushed = []
    for ref in image.refs:
        repo_tag, digest = ref.split("@")
        repo, tag = repo_tag.rsplit(":", 1)
        manifest = blob(digest)
        doc = json.loads(manifest)
        for d in [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]:
            status, headers, body = request("POST", f"/v2/{repo}/blobs/uploads/")
            if status != 202:
                raise LabError(f"push to {ip}: start upload {repo}: HTTP {status} {body[:200]!r}")
            loc = headers["location"]
            path = loc.split("://", 1)[-1].split("/", 1)[-1] if "://" in loc else loc.lstrip("/")
            sep = "&" if "?" in path else "?"
            data = blob(d)
            status, _, body = request("PUT", f"/{path}{sep}digest={d}", data,
                                      {"Content-Type": "application/octet-stream",
                                       "Content-Length": str(len(data))})
            if status != 201:
                raise LabError(f"push to {ip}: blob {d}: HTTP {status} {body[:200]!r}")
        status, headers, body = request("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                                        {"Content-Type": doc.get("mediaType", OCI_MANIFEST)})
        if status != 201 or headers.get("docker-content-digest") != digest:
            raise LabError(f"push to {ip}: manifest {repo}:{tag}: HTTP {status} "
                           f"{headers.get('docker-content-digest')} {body[:200]!r}")
        if "sha256:" + hashlib.sha256(manifest).hexdigest() != digest:
            raise LabError(f"{ref}: the store's manifest does not hash to its digest")
        pushed.append(ref)
    return pushed


def registry_tree(lab: Lab, state: SealerCluster, ip: str) -> dict[str, int]:
    """`relative path -> size` of ``ip``'s distribution tree (what lib/replica.sh's tree_list
    lists: no partial dirs, no uploads)."""
    root = lab.host_path(ip, f"{state.rootfs}/registry/docker/registry/v2")
    out = {}
    for dirpath, _, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if "/.~tmp~" in f"/{rel_dir}" or "/_uploads" in f"/{rel_dir}":
            continue
        for name in files:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            out[rel] = os.path.getsize(os.path.join(dirpath, name))
    return out


def cache_ids(lab: Lab, state: SealerCluster, ip: str) -> set[str]:
    """The `<rootfs>/cache/registry/<id>` flags on ``ip``."""
    d = lab.host_path(ip, f"{state.rootfs}/cache/registry")
    return {p.name for p in d.iterdir()} if d.is_dir() else set()
