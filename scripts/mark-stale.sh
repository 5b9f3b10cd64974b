#!/usr/bin/env bash
# Puts a warm standby's stale gate on when its replica no longer matches master0's tree (`cli
# watch` runs it when master0's tree moved): creates <rootfs>/registry/.sealer-stale, so its
# read-only registry answers 503 on every route until the next data step completes a copy
# (scripts/pull-data.sh --replica removes the marker after the stamp). Compares again here
# before it writes: a copy that completed since the watcher read the stamp is left alone.
# Usage: mark-stale.sh ROOTFS MASTER0_TREE
# Output (stdout): result=marked|already|fresh|no-stamp stamp_tree=<the stamp's tree or empty>
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi

main() {
  local rootfs=$1 want=$2 registry tree
  [[ "$want" =~ ^[0-9a-f]{64}$ ]] || fatal "MASTER0_TREE must be a sha256 hex digest, got '$want'"
  registry=$rootfs/registry
  tree=$(sed -n 's/.*"tree": "\([0-9a-f]\{64\}\)".*/\1/p' "$registry/.sealer-replica" 2>/dev/null || true)
  if [[ -z "$tree" ]]; then
    echo "result=no-stamp stamp_tree="
    return 0
  fi
  if [[ "$tree" == "$want" ]]; then
    echo "result=fresh stamp_tree=$tree"
    return 0
  fi
  if [[ -e "$registry/.sealer-stale" ]]; then
    echo "result=already stamp_tree=$tree"
    return 0
  fi
  : >"$registry/.sealer-stale" || fatal "cannot write $registry/.sealer-stale"
  info "stale gate on: this replica (tree $tree) lags master0 (tree $want)"
  echo "result=marked stamp_tree=$tree"
}

main "$@"
