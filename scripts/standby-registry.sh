#!/usr/bin/env bash
# Makes sure a deploy host that is not master0 serves no registry (no second registry for the
# domain: a revived old master0 must not answer with stale data).
# Usage: standby-registry.sh ROOTFS
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi
if ! declare -F stop_registry >/dev/null; then
  # shellcheck source=lib/registry.sh
  source "${BASH_SOURCE[0]%/*}/lib/registry.sh"
fi

main() {
  local rootfs=$1
  if [[ ! -d "$rootfs" ]]; then
    info "no rootfs at $rootfs: nothing to stop"
    return 0
  fi
  stop_registry "$rootfs"
  rm -f "$rootfs/etc/.sealer-registry-material"
}

main "$@"
