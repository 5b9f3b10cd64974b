#!/usr/bin/env bash
# Installs the registry's rootfs files (registry config, htpasswd, certs) from a base64 tar on stdin.
# Usage: write-rootfs.sh ROOTFS   (stdin: base64 of a tar of paths relative to ROOTFS)
# Keys and htpasswd get mode 0600; files already equal are left alone. Nothing else under ROOTFS
# is touched: in sealer v0.8, etc/registry.yml is sealer's own settings file (ip, domain, port,
# username, password; pkg/runtime/registry.go@v0.8.7), so a payload that names it is refused
# before anything is written.
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi

STAGING=""
# A function, not a trap string with the path in it: the path holds ROOTFS, a config value, and
# must never become shell code.
cleanup() { [[ -z "$STAGING" ]] || rm -rf "$STAGING"; }

# Paths of ROOTFS that belong to sealer, never to this program.
readonly SEALERS_OWN=(etc/registry.yml)

refuse_sealers_own() {
  local staging=$1 path
  for path in "${SEALERS_OWN[@]}"; do
    [[ ! -e "$staging/$path" ]] || fatal "the payload names $path, sealer's own file: refused, nothing written"
  done
}

mode_for() {
  case "$1" in
    *.key | *htpasswd) echo 0600 ;;
    *) echo 0644 ;;
  esac
}

main() {
  local rootfs=${1:?usage: write-rootfs.sh ROOTFS}
  local file
  mkdir -p "$rootfs/registry" "$rootfs/etc" "$rootfs/certs"
  STAGING=$(mktemp -d "$rootfs/.sealer-registry.XXXXXX")
  trap cleanup EXIT
  base64 -d | tar -x -C "$STAGING" --no-same-owner --no-same-permissions
  refuse_sealers_own "$STAGING"
  while IFS= read -r -d '' file; do
    file=${file#./}
    put_file "$STAGING/$file" "$rootfs/$file" "$(mode_for "$file")" >/dev/null
  done < <(cd "$STAGING" && find . -type f -print0 | sort -z)
}

main "$@"
