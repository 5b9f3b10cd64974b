"""A real docker engine on a lab host: Debian's `docker.io` (dockerd 20.10) as the node runtime
sealer's official cluster images ship (docker 19.03.14-sealer: basefs
context/docker/rootfs/scripts/docker.sh@main; README.md@v0.11.0:163-171).

dockerd runs as a host service (``Lab.start_service``, name ``dockerd``) in the host's own network
and mount namespaces, so it reads the host's private ``/etc/hosts`` and ``/etc/docker/certs.d``
exactly as on a machine: ``<domain>:<port>/*.crt`` are CAs, ``*.cert``/``*.key`` client pairs;
no ``insecure-registries``. Its data root ``/var/lib/docker`` is the host's private directory
(``lab.hosts.PRIVATE_DIRS``), its socket, pid file and exec root live in the host's ``/run``
tmpfs. A crash-kill (``Lab.kill(crash=True)``) kills it with every process of the host and
``Lab.revive`` starts it again like any recorded service; a freeze (SIGSTOP) stops it too.

What differs from sealer's docker nodes (basefs context/docker/rootfs/etc/docker.service@main):
- cgroups: a lab host's mount namespace was made by ``ip netns exec``, which mounts a fresh
  ``/sys`` for the network namespace: ``/sys/fs/cgroup`` is empty there and dockerd stops with
  ``Devices cgroup isn't mounted``. ``start`` mounts the machine's cgroup hierarchies again in the
  host's mount namespace (a tmpfs on ``/sys/fs/cgroup`` and, for each ``cgroup``/``cgroup2``
  mount of the root namespace, the same hierarchy with the same options: mounting an existing v1
  hierarchy again attaches to it). Nothing else of ``/sys`` changes.
- no bridge, no iptables (``--bridge=none --iptables=false --ip6tables=false --ip-masq=false``):
  the lab pulls images, it runs no containers; the machine's firewall is not ours to change.
- dockerd finds the host's containerd at ``/run/containerd/containerd.sock`` and uses it (as
  Debian's docker.service does) instead of starting one of its own: one process per docker host.
- basefs' ``daemon.json`` is not used: its ``mirror-registries`` key is a feature of sealer's docker
  fork (19.03.14-sealer); Debian's dockerd refuses unknown keys. Its ``data-root`` is the default.
"""
from __future__ import annotations

import base64
import json
import shlex
import socket
import time

from lab.hosts import Lab, LabError
from lab.pull import Pull

SERVICE = "dockerd"
DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's client: /usr/local/bin may hold another one
SOCKET = "/run/docker.sock"
ARGV = [DOCKERD, "-H", f"unix://{SOCKET}", "--data-root", "/var/lib/docker",
        "--exec-root", "/run/docker", "--pidfile", "/run/docker.pid",
        "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"]

# $1: the mounts to make, one "<fstype> <target> <options>" a line, from the root namespace's
# /proc/self/mounts. Idempotent: a mounted target is left alone.
CGROUP_SCRIPT = r"""
set -euo pipefail
main() {
  local fstype target opts
  mountpoint -q /sys/fs/cgroup || mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup
  while read -r fstype target opts; do
    [ -n "$fstype" ] || continue
    mkdir -p "$target"
    mountpoint -q "$target" || mount -t "$fstype" -o "$opts" "$fstype" "$target"
  done <<<"$1"
}
main "$@"
"""

# $1 ref (<registry>/<repo>:<tag>), $2 user ("" = anonymous), $3 seconds the pull may take;
# stdin: the password. Prints the digest the tag resolved to; docker's errors on stderr.
PULL_SCRIPT = r"""
set -uo pipefail
ref=$1 user=$2 limit=$3
registry=${ref%%/*}
docker=/usr/bin/docker
host=(-H unix:///run/docker.sock)
umask 077
DOCKER_CONFIG=$(mktemp -d)
export DOCKER_CONFIG
forget() {
  "$docker" "${host[@]}" rmi -f "$ref" >/dev/null 2>&1 || true
}
clean() {
  forget
  rm -rf "$DOCKER_CONFIG"
}
trap clean EXIT
main() {
  local pass="" digest
  forget
  if [ -n "$user" ]; then
    IFS= read -r pass || true
    # (its success says the password is stored unencrypted: true, in a 0700 dir removed at exit)
    if ! printf '%s' "$pass" | "$docker" "${host[@]}" login --username "$user" --password-stdin \
      "$registry" >/dev/null 2>"$DOCKER_CONFIG/login.err"; then
      cat "$DOCKER_CONFIG/login.err" >&2
      return 1
    fi
  fi
  timeout "$limit" "$docker" "${host[@]}" pull -q "$ref" >/dev/null || return 1
  digest=$("$docker" "${host[@]}" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' \
    "$ref" | sed -n 's/^.*@\(sha256:[0-9a-f]*\)$/\1/p' | head -n 1)
  printf '%s\n' "$digest"
}
main
"""


def _cgroup_mounts() -> str:
    lines = []
    with open("/proc/self/mounts") as f:
        for line in f:
            _, target, fstype, opts, *_ = line.split()
            if fstype in ("cgroup", "cgroup2") and target.startswith("/sys/fs/cgroup/"):
                lines.append(f"{fstype} {target} {opts}")
    return "\n".join(lines)


def _ping(lab: Lab, host: str) -> bool:
    """dockerd's API answers on the host's socket (reached through the holder's /proc root)."""
    try:
        path = str(lab.host_path(host, SOCKET))
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = s.recv(4096)
        return answer.startswith(b"HTTP/1.") and answer.rstrip().endswith(b"OK")
    except (OSError, LabError):
        return False


def running(lab: Lab, host: str) -> bool:
    """dockerd lives on the host and its API answers."""
    return lab.service_pid(host, SERVICE) is not None and _ping(lab, host)


def start(lab: Lab, host: str, timeout: float = 30) -> float:
    """Start dockerd on ``host`` (idempotent: a running one is left alone) and wait until its API
    answers. Returns the seconds it took (0 when it was running)."""
    if running(lab, host):
        return 0.0
    began = time.monotonic()
    lab.run(host, f"bash -c {shlex.quote(CGROUP_SCRIPT)} cgroups {shlex.quote(_cgroup_mounts())}")
    lab.start_service(host, SERVICE, ARGV)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(lab, host):
            return time.monotonic() - began
        if lab.service_pid(host, SERVICE) is None:
            break
        time.sleep(0.05)
    tail = "\n".join(lab.service_log(host, SERVICE).read_text(errors="replace").splitlines()[-15:])
    lab.stop_service(host, SERVICE)
    raise LabError(f"dockerd on {host} did not answer on {SOCKET} within {timeout}s; its log "
                   f"ends with:\n{tail}")


def stop(lab: Lab, host: str, forget: bool = False) -> bool:
    """Stop dockerd (SIGTERM, like `systemctl stop docker`). ``forget``: a revive after a crash no
    longer starts it (`systemctl disable`). True if it was running."""
    return lab.stop_service(host, SERVICE, forget=forget, timeout=20)


def rss_kib(lab: Lab, host: str) -> int:
    """dockerd's resident memory in KiB (0 when it does not run)."""
    pid = lab.service_pid(host, SERVICE)
    if pid is None:
        return 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pull(lab: Lab, host: str, ref: str, user: str = "", password: str = "",
         timeout: int = 120) -> Pull:
    """A real ``docker pull ref`` (``<registry>/<repo>:<tag>``, e.g. ``sea.hub:5000/x:y``) on
    ``host`` by its dockerd, trusting what ``/etc/docker/certs.d/<registry>/`` holds there. With
    ``user``, ``docker login --password-stdin`` first, into a private ``DOCKER_CONFIG`` (0700,
    removed afterwards): the password travels on stdin only. The image is removed before and
    after, so every call is a real pull. ``Pull.digest`` is what the tag resolved to."""
    if not ref or "/" not in ref or any(c.isspace() for c in ref):
        raise ValueError(f"ref must be <registry>/<repo>:<tag>, got {ref!r}")
    return _run_pull(lab, host, PULL_SCRIPT, [ref, user, str(int(timeout))], password, timeout)


def _run_pull(lab: Lab, host: str, script: str, args: list[str], secret: str,
              timeout: int) -> Pull:
    """``script`` (a pull script above) on ``host`` with ``args``, ``secret`` on its stdin: what
    the tag resolved to, or a failed Pull with the script's stderr."""
    began = time.monotonic()
    argv = " ".join(shlex.quote(a) for a in args)
    done = lab.run(host, f"bash -c {shlex.quote(script)} pull {argv}", input=secret + "\n",
                   check=False, timeout=timeout + 60)
    digest = done.stdout.strip() if done.returncode == 0 else ""
    return Pull(done.returncode == 0 and digest.startswith("sha256:"), digest, done.stderr,
                time.monotonic() - began)


# $1 ref (<registry>/<repo>:<tag>), $2 seconds the pull may take; stdin: the X-Registry-Auth
# value (base64url of {"username", "password", "serveraddress"}, "" = anonymous). The engine API's
# `POST /images/create` as the kubelet's docker shim sends it (no `docker login`: the credentials
# ride on the pull itself); a 200 whose stream ends with an "error" line is a failed pull.
API_PULL_SCRIPT = r"""
set -uo pipefail
ref=$1 limit=$2
docker=/usr/bin/docker
host=(-H unix:///run/docker.sock)
repo=${ref%:*} tag=${ref##*:}
forget() { "$docker" "${host[@]}" rmi -f "$ref" >/dev/null 2>&1 || true; }
trap forget EXIT
main() {
  local auth="" out digest
  IFS= read -r auth || true
  forget
  # an error before the stream starts (the /v2/ ping, the auth) is an HTTP error status with
  # {"message": ...}; one during the stream is a 200 whose last line holds "error"
  out=$(curl -sS --max-time "$limit" --unix-socket /run/docker.sock -X POST \
    -H "X-Registry-Auth: $auth" -w '\n%{http_code}' \
    "http://docker/images/create?fromImage=$repo&tag=$tag") || { printf '%s\n' "$out" >&2; return 1; }
  if [ "${out##*$'\n'}" != 200 ]; then
    printf '%s\n' "${out%$'\n'*}" >&2
    return 1
  fi
  if grep -q '"error"' <<<"$out"; then
    grep '"error"' <<<"$out" | tail -n 1 >&2
    return 1
  fi
  digest=$("$docker" "${host[@]}" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' \
    "$ref" | sed -n 's/^.*@\(sha256:[0-9a-f]*\)$/\1/p' | head -n 1)
  printf '%s\n' "$digest"
}
main
"""


def pull_as_kubelet(lab: Lab, host: str, ref: str, user: str = "", password: str = "",
                    timeout: int = 120) -> Pull:
    """``ref`` pulled the way the kubelet's docker shim pulls (dockershim / cri-dockerd
    ``PullImage``): one engine API call ``POST /images/create`` with the credentials in
    ``X-Registry-Auth``, no ``docker login`` before it (``pull`` logs in first, one more request
    to the registry). dockerd still pings ``/v2/`` first, with its 15 s client timeout. The image
    is removed before and after."""
    if not ref or "/" not in ref or ":" not in ref.rsplit("/", 1)[1]:
        raise ValueError(f"ref must be <registry>/<repo>:<tag>, got {ref!r}")
    auth = ""
    if user:
        body = json.dumps({"username": user, "password": password,
                           "serveraddress": ref.split("/", 1)[0]}).encode()
        auth = base64.urlsafe_b64encode(body).decode()
    return _run_pull(lab, host, API_PULL_SCRIPT, [ref, str(int(timeout))], auth, timeout)
