"""master0 filled from the image store, as the program fills it now: one image's refs served by
the lab's store registry (lab/store.py: a real docker-registry, HTTPS with its own CA, htpasswd),
copied into an empty registry launched on a lab host by the program's own steps
(write-rootfs.sh, launch-registry.sh) with scripts/fill-from-store.sh run exactly as the
`data-<ip>` step runs it (`/bin/sh -c 'bash -s -- FLAGS...'`, the script then every secret on
stdin: one SSH ControlMaster with a local forward to the host's 127.0.0.1:PORT, skopeo copies 4
at a time, curl HEAD checks, the stamp). In the same run, against:
- `skopeo copy --all --preserve-digests` of the same refs one after the other, straight to the
  host's registry on its address (no tunnel, no parallelism, no checks, no stamp);
- `tar | ssh -c aes128-gcm` (the fill's cipher) of the image's registry tree from the store's
  disk into the host: the raw transfer floor (no TLS, no registry, no hashing);
- the fill again with every ref already served (the no-op refill: curl HEADs and the stamp).
Every method starts from an empty registry (stopped, its tree removed, launched again: its
in-memory blob cache would otherwise claim blobs that are gone)."""

from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from bench.copy import COPY_ROOT, CopyError, Source, clear, expect_complete, tar_ssh, target_summary
from components.access import SshAccess
from components.deploy_host import RootfsPayload
from components.remote_scripts import script_run
from lab import store as lab_store
from lab.hosts import ROOTFS_SRC, Lab
from lab.stack import DOMAIN, PORT
from material import build_material

ROOTFS = f"{COPY_ROOT}/fill"          # the launched registry's rootfs on the host
REGISTRY = f"{ROOTFS}/registry"       # its volume: docker/registry/v2 below
TAR_DEST = f"{COPY_ROOT}/fill-tar"
USER, PASSWORD = "admin", "bench-Fill-Passw0rd"
CIPHER = "aes128-gcm@openssh.com"    # what scripts/lib/ssh-client.sh gives the fill's tunnel
TICK = os.sysconf("SC_CLK_TCK")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Target:
    """The host's registry, launched as the program launches master0's, emptied on demand."""

    def __init__(self, lab: Lab, host: str, ca: tuple[str, str]):
        self.lab, self.host = lab, host
        self.ip = lab.host(host).ip
        self.material = build_material(domain=DOMAIN, port=PORT, deploy_ips=[self.ip], insecure=False,
                                       username=USER, password=PASSWORD, ca_cert=ca[0], ca_key=ca[1])
        self.payload = RootfsPayload.of(self.material, DOMAIN)

    def _step(self, name: str, *args: str, data: str | None = None) -> None:
        run = script_run(name, *args, data=data)
        self.lab.ssh(self.host, run.command, input=run.stdin, timeout=120)

    def stop(self) -> None:
        self.lab.run(self.host, f"if [ -f {ROOTFS}/scripts/stop-registry.sh ]; then "
                                f"cd {ROOTFS}/scripts && bash stop-registry.sh; fi", timeout=60)

    def empty(self) -> None:
        """A running registry with no data: stopped, tree and stamp removed, launched again."""
        self.stop()
        self.lab.run(self.host, f"rm -rf {REGISTRY} {TAR_DEST}", timeout=300)
        subprocess.run(["sync"], check=False)
        scripts = self.lab.host_path(self.host, f"{ROOTFS}/scripts")  # a sealer rootfs' own scripts
        scripts.mkdir(parents=True, exist_ok=True)
        for script in (ROOTFS_SRC / "scripts").glob("*.sh"):
            shutil.copyfile(script, scripts / script.name)
        self._step("write-rootfs.sh", ROOTFS, data=self.payload.data)
        self._step("launch-registry.sh", ROOTFS, str(PORT), DOMAIN, self.payload.fingerprint)

    def served_digest(self, ref: str, workdir: Path) -> str:
        """The digest the host's registry serves for REPO:TAG (curl from this machine, TLS verified
        by the cluster CA, the login in a 0600 file)."""
        repo, tag = ref.split("@")[0].rsplit(":", 1)
        ca, cfg = workdir / "check-ca.crt", workdir / "check.cfg"
        ca.write_text(self.material.ca_cert)
        cfg.touch(mode=0o600)
        cfg.write_text(f'user = "{USER}:{PASSWORD}"\n')
        out = subprocess.run(
            ["curl", "-sS", "-I", "-K", str(cfg), "--cacert", str(ca), "-H",
             "Accept: application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
             "application/vnd.docker.distribution.manifest.v2+json",
             f"https://{self.ip}:{PORT}/v2/{repo}/manifests/{tag}"],
            capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            if line.lower().startswith("docker-content-digest:"):
                return line.split(":", 1)[1].strip()
        return ""

    def expect_served(self, refs: list[str], src: Source, method: str, workdir: Path) -> None:
        """Every ref served with its pinned digest, and the blob bytes on disk those of the store."""
        for ref in refs:
            got = self.served_digest(ref, workdir)
            if got != ref.split("@")[1]:
                raise CopyError(f"{method}: {self.host} serves {ref.split('@')[0]} as {got or 'nothing'}")
        _files, size = target_summary(self.lab, self.host, f"{REGISTRY}/docker/registry/v2/blobs")
        want = sum((src.tree / f).stat().st_size for f in src.files() if "/v2/blobs/" in f)
        if size != want:
            raise CopyError(f"{method}: {size} blob bytes on {self.host}, the store holds {want}")


# ---------------------------------------------------------------- methods

def fill(lab: Lab, target: Target, served: lab_store.StoreRegistry, refs: list[str]) -> tuple[float, str]:
    """scripts/fill-from-store.sh as components/deploy_host.py runs it (local.Command: /bin/sh -c,
    the script then StoreSource.stdin's NAME BASE64 lines on stdin; the flags of
    SshAccess.rsync_flags for a root login by key with the host key pinned)."""
    h = lab.host(target.host)
    access = SshAccess(user="root", port=h.ssh_port, private_key="", host_keys={h.ip: h.host_key})
    lines = "".join(f"{name} {_b64(value)}\n" for name, value in {
        "ssh": lab.key_path.read_text(), "store-auth": f"{served.username}:{served.password}",
        "dest-auth": target.material.fill_login, "store-ca": served.ca_file.read_text(),
        "dest-ca": target.material.ca_cert}.items())
    run = script_run("fill-from-store.sh", *access.rsync_flags(h.ip), f"root@{h.ip}", str(h.ssh_port),
                     ROOTFS, served.registry, str(PORT), *refs, data=lines)
    start = time.monotonic()
    done = subprocess.run(["/bin/sh", "-c", run.command], input=run.stdin, capture_output=True,
                          text=True, timeout=1200)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise CopyError(f"fill-from-store.sh exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done.stdout


def skopeo_direct(target: Target, served: lab_store.StoreRegistry, refs: list[str]) -> float:
    """One plain `skopeo copy` per ref, in sequence, straight to the host's registry on its
    address (TLS verified by the cluster CA; the logins in a 0600 auth file)."""
    with tempfile.TemporaryDirectory(prefix="bench-skopeo-") as tmp:
        work = Path(tmp)
        dest = f"{target.ip}:{PORT}"
        (work / "auth.json").touch(mode=0o600)
        (work / "auth.json").write_text(json.dumps({"auths": {
            served.registry: {"auth": _b64(f"{served.username}:{served.password}")},
            dest: {"auth": _b64(f"{USER}:{PASSWORD}")}}}))
        (work / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
        (work / "dest-certs").mkdir()
        (work / "dest-certs" / "ca.crt").write_text(target.material.ca_cert)
        start = time.monotonic()
        for ref in refs:
            name, digest = ref.split("@")
            repo = name.rsplit(":", 1)[0]
            done = subprocess.run(
                ["skopeo", "--policy", str(work / "policy.json"), "copy", "-q", "--all",
                 "--preserve-digests", "--authfile", str(work / "auth.json"),
                 "--src-cert-dir", str(served.cert_dir), "--dest-cert-dir", str(work / "dest-certs"),
                 f"docker://{served.registry}/{repo}@{digest}", f"docker://{dest}/{name}"],
                capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                raise CopyError(f"skopeo copy {ref} exited {done.returncode}: {done.stderr[-2000:]}")
        return time.monotonic() - start


# ---------------------------------------------------------------- where the time goes

def _proc_times(pid: int) -> tuple[str, float] | None:
    """(comm, own + reaped children's CPU seconds) of a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return comm, sum(int(x) for x in fields[11:15]) / TICK


def _machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


class CpuMeter:
    """CPU seconds spent during one method: this process's children (skopeo, ssh, curl, tar and
    their shells: exact, from getrusage), every process of the host (its registry; its sshd with
    the per-connection children it reaped), the store registry, and the whole machine."""

    def __init__(self, lab: Lab, host: str, store_pid: int):
        self.lab, self.host, self.store_pid = lab, host, store_pid

    def _host(self) -> dict[int, tuple[str, float]]:
        out = {}
        for pid in self.lab.pids(self.host):
            t = _proc_times(pid)
            if t is not None:
                out[pid] = t
        return out

    def __enter__(self) -> "CpuMeter":
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._client = ru.ru_utime + ru.ru_stime
        self._hostpids = self._host()
        self._store = (_proc_times(self.store_pid) or ("", 0.0))[1]
        self._busy = _machine_busy()
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.monotonic() - self._start
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        host: dict[str, float] = {}
        for pid, (comm, cpu) in self._host().items():
            before = self._hostpids.get(pid)
            delta = cpu - (before[1] if before and before[0] == comm else 0.0)
            if delta > 0:
                host[comm] = host.get(comm, 0.0) + delta
        busy = _machine_busy() - self._busy
        self.figures = {
            "client_tree_s": round(ru.ru_utime + ru.ru_stime - self._client, 2),
            "host_s": {k: round(v, 2) for k, v in sorted(host.items(), key=lambda kv: -kv[1])},
            "store_registry_s": round((_proc_times(self.store_pid) or ("", self._store))[1] - self._store, 2),
            "machine_busy_s": round(busy, 2),
            "machine_busy_pct": round(100 * busy / (wall * (os.cpu_count() or 1)), 0) if wall else None,
        }


# ---------------------------------------------------------------- the measurement

def measure(lab: Lab, host: str, src: Source, ca: tuple[str, str], repeat: int,
            log: Callable[[str], None]) -> dict:
    """Median seconds of the fill, the direct skopeo copy and tar | ssh over ``repeat`` rounds
    (order rotating), and of the no-op refill (run right after each round's fill); bytes on the
    wire towards the host and a CPU breakdown of each method's last round. The store registry
    serves ``src.store`` for the measurement, then what it served before (the stack's images)."""
    before = lab_store.status(lab)
    previous = before.get("store") if before.get("running") else None
    served = lab_store.ensure(lab, src.store)
    image_id = f"sha256:{src.hexid}"
    refs = served.images[image_id]
    target = Target(lab, host, ca)
    target.stop()  # a registry an interrupted run left
    clear(lab, host)
    samples: dict[str, list[float]] = {"fill": [], "fill_skopeo_direct": [], "fill_tar_ssh_gcm": [],
                                       "fill_noop": []}
    wire: dict[str, int] = {}
    cpu: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fill-") as tmp:
            workdir = Path(tmp)

            def timed(name: str, run: Callable[[], float]) -> None:
                start_bytes = lab.bytes_to(host)
                with CpuMeter(lab, host, served.pid) as meter:
                    seconds = run()
                wire[name] = lab.bytes_to(host) - start_bytes
                cpu[name] = meter.figures
                samples[name].append(round(seconds, 3))
                log(f"  {name}: {seconds:.2f}s, {wire[name] >> 20} MiB on the wire, CPU {meter.figures}")

            def the_fill() -> None:
                target.empty()
                timed("fill", lambda: fill(lab, target, served, refs)[0])
                target.expect_served(refs, src, "fill", workdir)
                out: list[str] = []
                timed("fill_noop", lambda: _keep(fill(lab, target, served, refs), out))
                if f"(0 copied, {len(refs)} present)" not in out[0]:
                    raise CopyError(f"the refill copied again: {out[0].strip()}")

            def the_direct() -> None:
                target.empty()
                timed("fill_skopeo_direct", lambda: skopeo_direct(target, served, refs))
                target.expect_served(refs, src, "fill_skopeo_direct", workdir)

            def the_tar() -> None:
                target.empty()
                timed("fill_tar_ssh_gcm", lambda: tar_ssh(lab, host, src, TAR_DEST, CIPHER))
                expect_complete(lab, host, f"{TAR_DEST}/docker", src, "fill_tar_ssh_gcm")

            methods = [the_fill, the_direct, the_tar]
            src.warm()
            for r in range(repeat):
                log(f"  round {r + 1}")
                for method in methods[r % 3:] + methods[:r % 3]:
                    method()
    finally:
        target.stop()
        clear(lab, host)
        if previous and Path(previous) != src.store.resolve():
            lab_store.ensure(lab, previous)
    result: dict = {f"{k}_samples": v for k, v in samples.items()}
    result.update({k: sorted(v)[len(v) // 2] for k, v in samples.items() if v})
    blobs = [f for f in src.files() if "/v2/blobs/" in f]
    result.update({
        "fill_refs": len(refs),
        "fill_bytes": src.bytes(),
        "fill_blobs": len(blobs),
        "fill_blob_bytes": sum((src.tree / f).stat().st_size for f in blobs),
        "fill_wire_bytes": dict(wire),  # the last round's
        "fill_cpu_s": cpu,                                    # the last round's
    })
    return result


def _keep(result: tuple[float, str], out: list[str]) -> float:
    out.append(result[1])
    return result[0]
