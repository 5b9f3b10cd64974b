#!/usr/bin/env bash
# Reports one host's registry side as KEY=VALUE lines for `python -m cli status` and the
# preflight of `recover`/`rejoin`. Reads only; changes nothing on the host.
# Usage: status-probe.sh [--entry-stats PORT] ROOTFS DOMAIN PORT CA_SHA256 REF...
#   --entry-stats PORT: also report the node-local entry point (registry.local_registry.node_entry:
#   HAProxy's stats page on 127.0.0.1:PORT) as entry=<ip:port>:<status>[:backup]... (its servers in
#   the order of its config; status as HAProxy's CSV says it: UP, DOWN, "UP 1/2", MAINT, ...), or
#   entry=unreachable when the page does not answer
#   CA_SHA256: sha256 of the configured CA certificate (see pem_digest), or "-" when there is none (insecure mode)
#   REF: REPO:TAG@DIGEST of an image of the boot history
# Output (stdout): probe, hostname, registry (running|stale|stopped), registry_mode (read-only|
# read-write when running, else empty: a warm standby serves read-only), ref_missing (once per missing
# REF), refs_ok, resolves, ca (ok|differs|partial|absent|-: docker's certs.d and the hosts dir
# containerd reads), containerd (which certs dir the containerd that serves the CRI reads:
# containerd_certs_d_state; elsewhere:<config_path> is where the program's trust went), disk_avail,
# registry_bytes, replica (the replica stamp's line when complete, else none), tree (the live
# registry tree as the stamp's "tree" is computed, lib/replica.sh tree_list: "<sha256> <files>
# <bytes>", empty without a registry tree), flags (the image ids of <rootfs>/cache/registry/, one
# flag file per image whose registry data sealer put here, as <id>:<mtime>, space-separated), clock (the host's
# unix time, to age the stamp by the host's own clock).
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
  # shellcheck source=lib/containerd.sh
  source "${BASH_SOURCE[0]%/*}/lib/containerd.sh"
  # shellcheck source=lib/replica.sh
  source "${BASH_SOURCE[0]%/*}/lib/replica.sh"
  # shellcheck source=lib/registry.sh
  source "${BASH_SOURCE[0]%/*}/lib/registry.sh"
  # shellcheck source=lib/trust.sh
  source "${BASH_SOURCE[0]%/*}/lib/trust.sh"
  # shellcheck source=lib/hosts-dir.sh
  source "${BASH_SOURCE[0]%/*}/lib/hosts-dir.sh"
fi

# running when something answers /v2/ on the registry port (401 counts: auth is on); stale when
# it answers 503 while the warm standby's stale marker exists (its registry is held out of
# service until a copy of master0's data completes: scripts/pull-data.sh). A stopped registry
# refuses the connection at once; 5 s is for a running one on a loaded host (at 3 + 500 in the
# lab, right after the recovery's `up`, a standby was reported stopped: most likely this bound).
registry_state() {
  local rootfs=$1 port=$2 scheme code
  for scheme in https http; do
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "$scheme://127.0.0.1:$port/v2/" 2>/dev/null || true)
    if [[ "$code" == 200 || "$code" == 401 ]]; then
      echo running
      return 0
    fi
    if [[ "$code" == 503 && -e "$rootfs/registry/.sealer-stale" ]]; then
      echo stale
      return 0
    fi
  done
  echo stopped
}

# A ref is present when its tag link names its digest and the manifest blob exists.
check_refs() {
  local storage=$1 ref repo tag digest link blob ok=0
  shift
  for ref in "$@"; do
    digest=${ref##*@}
    repo=${ref%@*}
    tag=${repo##*:}
    repo=${repo%:*}
    link="$storage/repositories/$repo/_manifests/tags/$tag/current/link"
    blob="$storage/blobs/sha256/${digest:7:2}/${digest#sha256:}/data"
    if [[ -f "$link" && "$(cat "$link" 2>/dev/null || true)" == "$digest" && -f "$blob" ]]; then
      ok=$((ok + 1))
    else
      echo "ref_missing=$ref"
    fi
  done
  echo "refs_ok=$ok"
}

resolved_address() {
  local domain=$1
  getent hosts "$domain" 2>/dev/null | awk '{ print $1; exit }' || true
}

# ok: docker's certs.d and the hosts dir containerd reads (its CRI config_path, lib/hosts-dir.sh:
# the same directory on basefs nodes) both hold the configured CA in a *.crt (the program's ca.crt
# or sealer's <domain>.crt); differs: a directory has certificates, none of them it.
ca_state() {
  local domain=$1 port=$2 want=$3 dir found=0 same=0 crts dirs
  if [[ "$want" == - ]]; then
    echo -
    return 0
  fi
  dirs=("/etc/docker/certs.d/$domain:$port")
  dir="$(containerd_hosts_dir)/$domain:$port"
  [[ "$dir" == "${dirs[0]}" ]] || dirs+=("$dir")
  for dir in "${dirs[@]}"; do
    crts=("$dir"/*.crt)
    [[ -f "${crts[0]}" ]] || continue
    found=$((found + 1))
    if trust_file_with_digest "$dir" "$want" >/dev/null; then
      same=$((same + 1))
    fi
  done
  if ((found == 0)); then
    echo absent
  elif ((same < found)); then
    echo differs
  elif ((same < ${#dirs[@]})); then
    echo partial
  else
    echo ok
  fi
}

# "<sha256> <files> <bytes>" of the registry's tree_list lines (the digest a replica stamp's
# "tree" holds when it was copied from this tree); empty when there is no tree.
live_tree() {
  local registry=$1 list digest files bytes
  [[ -d "$registry/docker/registry/v2" ]] || return 0
  list=$(tree_list "$registry")
  digest=$(printf '%s' "${list:+$list$'\n'}" | sha256sum | cut -d' ' -f1)
  files=$(printf '%s' "${list:+$list$'\n'}" | wc -l)
  bytes=$(printf '%s' "${list:+$list$'\n'}" | awk '{ s += $NF } END { printf "%.0f", s }')
  echo "$digest $((files)) ${bytes:-0}"
}

# The image ids sealer flagged in <rootfs>/cache/registry/ (64 hex names only), each as
# <id>:<mtime> (unix s: sealer writes the flag when that image's data has been copied), sorted.
cache_flags() {
  local dir=$1/cache/registry
  [[ -d "$dir" ]] || return 0
  find "$dir" -mindepth 1 -maxdepth 1 -type f -printf '%f:%T@\n' 2>/dev/null |
    grep -E '^[0-9a-f]{64}:[0-9]+' | sed 's/\.[0-9]*$//' | LC_ALL=C sort | tr '\n' ' ' |
    sed 's/ $//' || true
}

# Free bytes where the registry data goes (the rootfs, or its nearest existing parent).
disk_avail() {
  local dir=$1
  while [[ ! -d "$dir" && "$dir" != / ]]; do
    dir=$(dirname "$dir")
  done
  df -PB1 "$dir" 2>/dev/null | awk 'NR == 2 { print $4 }' || true
}

# The servers of the entry point's TCP backend from HAProxy's stats CSV (columns found by their
# header names; the stats listener's own rows, FRONTEND and BACKEND are left out): each
# ADDR:STATUS(CHECK_STATUS)[:backup], CHECK_STATUS the last health check's result (L7OK, L4TOUT,
# L6TOUT, L7STS, ...: why a server is DOWN). HAProxy quotes
# a field that holds a comma (a failed check's `last_chk`: `"Layer4 connection problem, info:
# ""No route to host"""`): quoted fields are blanked first, so the columns after one stay in place
# (none of the columns read here is ever quoted).
entry_servers() {
  local stats_port=$1 csv
  if ! csv=$(curl -sf --max-time 2 "http://127.0.0.1:$stats_port/;csv" 2>/dev/null); then
    echo unreachable
    return 0
  fi
  printf '%s\n' "$csv" | sed 's/"[^"]*"//g' | awk -F, '
    NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
    $col["svname"] == "FRONTEND" || $col["svname"] == "BACKEND" || $col["addr"] == "" { next }
    { item = $col["addr"] ":" $col["status"]
      if ($col["check_status"] != "") item = item "(" $col["check_status"] ")"
      if ($col["bck"] == 1) item = item ":backup"
      gsub(/ /, "_", item); out = out (out == "" ? "" : " ") item }
    END { print out }'
}

main() {
  local entry_stats=""
  if [[ "${1:-}" == --entry-stats ]]; then
    entry_stats=$2
    shift 2
  fi
  local rootfs=$1 domain=$2 port=$3 ca_sha=$4 bytes registry
  shift 4
  echo "probe=1"
  echo "hostname=$(hostname 2>/dev/null || true)"
  registry=$(registry_state "$rootfs" "$port")
  echo "registry=$registry"
  if [[ "$registry" == running || "$registry" == stale ]]; then
    echo "registry_mode=$(registry_mode "$rootfs" "$port")"
  else
    echo "registry_mode="
  fi
  check_refs "$rootfs/registry/docker/registry/v2" "$@"
  echo "resolves=$(resolved_address "$domain")"
  containerd_snapshot
  echo "ca=$(ca_state "$domain" "$port" "$ca_sha")"
  echo "containerd=$(containerd_certs_d_state)"
  echo "disk_avail=$(disk_avail "$rootfs")"
  bytes=$(du -sb "$rootfs/registry" 2>/dev/null | cut -f1 || true)
  echo "registry_bytes=${bytes:-0}"
  if stamp_complete "$rootfs/registry"; then
    echo "replica=$(cat "$rootfs/registry/.sealer-replica")"
  else
    echo "replica=none"
  fi
  echo "tree=$(live_tree "$rootfs/registry")"
  echo "flags=$(cache_flags "$rootfs")"
  echo "clock=$(date +%s)"
  if [[ -n "$entry_stats" ]]; then
    echo "entry=$(entry_servers "$entry_stats")"
  fi
}

main "$@"
