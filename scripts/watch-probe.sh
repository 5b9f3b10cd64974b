#!/usr/bin/env bash
# One round of `python -m cli watch` on one prober host: asks each TARGET's registry for /v2/
# (all at once, at most 1 s to connect and 2 s in all), and reads this host's replica stamp.
# Reads only; changes nothing on the host.
# Usage: watch-probe.sh [--tree] ROOTFS PORT TARGET...
# Output (stdout): probe=1, replica=<the stamp's JSON line> | replica=none (no stamp file),
# then per TARGET one line `target=IP code=HTTP_CODE rc=CURL_EXIT` (code 000: no HTTP answer;
# rc 7: refused, the host is up; rc 28: timed out).
# --tree (run on master0 while warm standbys serve): also `tree=<sha256>`, this host's live
# registry tree as a replica stamp's "tree" is computed (lib/replica.sh), empty without a tree.
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
  # shellcheck source=lib/replica.sh
  source "${BASH_SOURCE[0]%/*}/lib/replica.sh"
fi

live_tree_digest() {
  local registry=$1/registry
  [[ -d "$registry/docker/registry/v2" ]] || return 0
  tree_list "$registry" | sha256sum | cut -d' ' -f1
}

# One line of at most 4 KiB: the stamp is one JSON line (COMMON.md's replica contract).
replica_stamp() {
  local stamp=$1/registry/.sealer-replica
  if [[ -f "$stamp" ]]; then
    echo "replica=$(head -c 4096 "$stamp" 2>/dev/null | tr -d '\r\n' || true)"
  else
    echo "replica=none"
  fi
}

probe_target() {
  local target=$1 port=$2 out=$3 code rc=0
  code=$(curl -sk -o /dev/null -w '%{http_code}' --connect-timeout 1 --max-time 2 \
    "https://$target:$port/v2/" 2>/dev/null) || rc=$?
  echo "target=$target code=${code:-000} rc=$rc" >"$out"
}

WORK=""

main() {
  local tree=0
  if [[ "${1:-}" == --tree ]]; then
    tree=1
    shift
  fi
  local rootfs=$1 port=$2 target i=0
  shift 2
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  echo "probe=1"
  replica_stamp "$rootfs"
  if ((tree)); then
    echo "tree=$(live_tree_digest "$rootfs")"
  fi
  for target in "$@"; do
    probe_target "$target" "$port" "$WORK/$i" &
    i=$((i + 1))
  done
  wait
  for ((i = 0; i < $#; i++)); do
    cat "$WORK/$i"
  done
}

main "$@"
