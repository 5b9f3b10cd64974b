"""A real client pull on a lab host, for the lab and e2e tests: the host's containerd fetches an
image through `<domain>:<port>` (its own /etc/hosts), trusting what the certs directory its
containerd reads holds for `<domain>:<port>` (the CRI `config_path` of the host's config.toml:
/etc/containerd/certs.d on a lab host, /etc/docker/certs.d/ with basefs' config, see
lab/runtimes.py). A directory without hosts.toml is read as containerd does: its `*.crt` are CAs,
`*.cert`/`*.key` client pairs. The credentials become an Authorization header in a
private copy of that directory (0700, removed afterwards); they travel on stdin, never on a command
line. `ctr content fetch` fetches the manifest, the config and every layer, each checked against
its digest by containerd's content store. The pulled image lives in its own containerd namespace,
emptied and removed afterwards.

On a host running containerd 2.x (``lab.runtimes.containerd2``) the pull is ``ctr image pull
--hosts-dir``, which goes through the daemon's transfer service, as the CRI plugin's pulls do
there by default: the CRI hands its config_path to ``registry.NewOCIRegistry(...,
registry.WithHostDir(config_path))`` and calls the transfer service
(internal/cri/server/images/image_pull.go@v2.2.9, pullImageWithTransferService, chosen unless
``use_local_image_pull``); ctr builds the same registry with ``WithHostDir(--hosts-dir)``
(cmd/ctr/commands/images/pull.go@v2.2.9, without ``--local``); the daemon reads the hosts dir
(core/transfer/registry/registry.go@v2.2.9, ``HostDirFromRoot`` then ``config.ConfigureHosts``),
where ``dial_timeout`` becomes the per-host dialer's timeout
(core/remotes/docker/config/hosts.go@v2.2.9). The image is unpacked into the host's snapshotter,
as a CRI pull does. ``ctr content fetch`` on 2.x would resolve the hosts in the ctr process
instead. Credentials stay a header in the private hosts.toml copy (the CRI passes the kubelet's
through the transfer service's credential callback instead): the hosts and their dialing are the
same either way.
"""
from __future__ import annotations

import dataclasses
import shlex
import time

from lab.runtimes import LAB_CONFIG_PATH, containerd_config_path, containerd_major

# $1 domain, $2 port, $3 repo:tag, $4 user ("" = anonymous), $5 containerd namespace, $6 seconds
# the fetch may take, $7 the certs directory (config_path), $8 "fetch" (containerd 1.x: ctr content
# fetch) or "transfer" (containerd 2.x: ctr image pull through the transfer service); stdin: password.
# Prints the digest the tag resolved to on stdout; ctr's errors on stderr; exit 1 when the pull failed.
PULL_SCRIPT = r"""
set -u
domain=$1 port=$2 image=$1:$2/$3 user=$4 ns=$5
src=${7%/}/$domain:$port
pass=
[ -z "$user" ] || IFS= read -r pass || true
umask 077
work=$(mktemp -d)
clean() {
  for i in $(ctr -n "$ns" images ls -q 2>/dev/null); do ctr -n "$ns" images rm --sync "$i" >/dev/null 2>&1; done
  for b in $(ctr -n "$ns" content ls -q 2>/dev/null); do ctr -n "$ns" content rm "$b" >/dev/null 2>&1; done
  ctr namespaces rm "$ns" >/dev/null 2>&1
  rm -rf "$work"
}
trap clean EXIT
dest=$work/certs.d/$domain:$port
mkdir -p "$dest"
if [ -d "$src" ]; then cp -pR "$src/." "$dest/"; fi
if [ -n "$user" ] && [ ! -f "$dest/hosts.toml" ]; then
  # The header needs a hosts.toml, and containerd reads a directory's loose cert files only when
  # it has none: name them in it (as containerd would have loaded them).
  # The same trust for the server and a [host] table of it: containerd 1.6 drops a file with no
  # [host] table ("invalid `host` tree"), and one without a server tries its default server last.
  cas=$(for f in "$dest"/*.crt; do [ -f "$f" ] && printf '"%s", ' "$f"; done)
  pairs=$(for f in "$dest"/*.cert; do [ -f "$f" ] && [ -f "${f%.cert}.key" ] &&
    printf '["%s", "%s"], ' "$f" "${f%.cert}.key"; done)
  trust=$( [ -z "$cas" ] || printf 'ca = [%s]\n' "${cas%, }"
           [ -z "$pairs" ] || printf 'client = [%s]\n' "${pairs%, }" )
  printf 'server = "https://%s:%s"\n%s\n\n[host."https://%s:%s"]\n  capabilities = ["pull", "resolve"]\n%s\n' \
    "$domain" "$port" "$trust" "$domain" "$port" "$trust" >"$dest/hosts.toml"
fi
if [ -n "$user" ]; then
  token=$(printf '%s:%s' "$user" "$pass" | base64 | tr -d '\n')
  printf '\n[header]\n  Authorization = "Basic %s"\n' "$token" >>"$dest/hosts.toml"
  # Every registry host of the file (master0 through the domain, then warm standbys): the way
  # containerd 1.6's CRI hands the kubelet's pull-secret credentials to each host it tries.
  for url in $(sed -n 's/^\[host\."\(https:\/\/[^"]*\)"\]$/\1/p' "$dest/hosts.toml"); do
    printf '\n[host."%s".header]\n  Authorization = "Basic %s"\n' "$url" "$token" >>"$dest/hosts.toml"
  done
fi
if [ "${8:-fetch}" = transfer ]; then
  timeout "$6" ctr -n "$ns" image pull --hosts-dir "$work/certs.d" "$image" >/dev/null || exit 1
else
  timeout "$6" ctr -n "$ns" content fetch --hosts-dir "$work/certs.d" "$image" >/dev/null || exit 1
fi
ctr -n "$ns" images ls | awk -v i="$image" '$1 == i { print $3 }'
"""


@dataclasses.dataclass
class Pull:
    ok: bool
    digest: str      # what the tag resolved to ("" when the pull failed)
    stderr: str
    seconds: float


def containerd_pull(lab, host: str, repo_tag: str, user: str = "", password: str = "",
                    domain: str = "sea.hub", port: int = 5000,
                    namespace: str = "lab-pull", timeout: int = 120,
                    certs_dir: str | None = None) -> Pull:
    """Pull ``repo_tag`` (``repo:tag``) on ``host`` through ``domain:port`` with its containerd;
    the fetch fails after ``timeout`` seconds. ``certs_dir``: the hosts directory to trust;
    default: the ``config_path`` of the config the host's containerd uses (the lab's
    /etc/containerd/certs.d when it sets none)."""
    if certs_dir is None:
        certs_dir = containerd_config_path(lab, host) or LAB_CONFIG_PATH
    mode = "transfer" if containerd_major(lab, host) >= 2 else "fetch"
    start = time.monotonic()
    q = shlex.quote
    done = lab.run(host, f"bash -c {q(PULL_SCRIPT)} pull {q(domain)} {port} {q(repo_tag)} {q(user)} "
                         f"{q(namespace)} {int(timeout)} {q(certs_dir)} {mode}", input=password + "\n",
                   check=False, timeout=timeout + 60)
    digest = done.stdout.strip() if done.returncode == 0 else ""
    return Pull(done.returncode == 0 and digest.startswith("sha256:"), digest, done.stderr,
                time.monotonic() - start)



@dataclasses.dataclass
class PullRound:
    """Pulls of a list of refs on one host, one after the other, the way a node restarting its
    pods would: each ``(ref, Pull)`` in order."""

    pulls: list[tuple[str, Pull]]

    @property
    def failures(self) -> list[str]:
        """Refs that did not pull, or whose tag resolved to another digest than the ref's."""
        return [ref for ref, p in self.pulls if not p.ok or p.digest != ref.rsplit("@", 1)[1]]

    @property
    def seconds(self) -> list[float]:
        return [p.seconds for _, p in self.pulls]

    def hops(self) -> int:
        """How many times containerd gave up on a host and tried the next (its log says so)."""
        return sum(p.stderr.count('msg="trying next host"') for _, p in self.pulls)

    def lines(self) -> list[str]:
        return [f"{ref.split('@')[0]}: {'ok' if ref not in self.failures else 'FAILED'} "
                f"{p.seconds:.2f}s" for ref, p in self.pulls]


def pull_round(lab, host: str, refs: list[str], user: str, password: str, domain: str = "sea.hub",
               port: int = 5000, timeout: int = 600, namespace: str = "lab-pull") -> PullRound:
    """Pull every ``REPO:TAG@DIGEST`` of ``refs`` on ``host`` through ``domain:port`` with the
    host's containerd and its certs.d (``containerd_pull``), one at a time."""
    return PullRound([(ref, containerd_pull(lab, host, ref.split("@")[0], user, password, domain,
                                            port, namespace, timeout)) for ref in refs])
