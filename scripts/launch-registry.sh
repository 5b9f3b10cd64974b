#!/usr/bin/env bash
# Launches the registry on this host through the rootfs' own init-registry.sh (sealer's contract:
# init-registry.sh PORT VOLUME DOMAIN), restarting it first when the registry material changed.
# Usage: launch-registry.sh ROOTFS PORT DOMAIN MATERIAL_FINGERPRINT
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi
if ! declare -F stop_registry >/dev/null; then
  # shellcheck source=lib/registry.sh
  source "${BASH_SOURCE[0]%/*}/lib/registry.sh"
fi

main() {
  local rootfs=$1 port=$2 domain=$3 fingerprint=$4
  local stamp="$rootfs/etc/.sealer-registry-material"
  [[ -f "$rootfs/scripts/init-registry.sh" ]] ||
    fatal "$rootfs/scripts/init-registry.sh is missing: is $rootfs a sealer rootfs?"
  mkdir -p "$rootfs/registry"
  # A running registry keeps the cert and htpasswd it started with: restart when they changed
  # (or when we never started it, e.g. sealer's own registry in an adopted cluster).
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$fingerprint" ]]; then
    info "registry material is new here ($fingerprint): restarting the registry"
    stop_registry "$rootfs"
  fi
  (cd "$rootfs/scripts" && bash init-registry.sh "$port" "$rootfs/registry" "$domain")
  printf '%s\n' "$fingerprint" >"$stamp"
  info "registry up on :$port for $domain"
}

main "$@"
