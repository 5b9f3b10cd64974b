#!/usr/bin/env bash
# Installs the registry's rootfs files (registry config, htpasswd, certs) from a base64 tar on stdin.
# Usage: write-rootfs.sh ROOTFS   (stdin: base64 of a tar of paths relative to ROOTFS)
# Keys and htpasswd get mode 0600; files already equal are left alone.
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi

mode_for() {
  case "$1" in
    *.key | *htpasswd) echo 0600 ;;
    *) echo 0644 ;;
  esac
}

main() {
  local rootfs=${1:?usage: write-rootfs.sh ROOTFS}
  local staging file
  mkdir -p "$rootfs/registry" "$rootfs/etc" "$rootfs/certs"
  staging=$(mktemp -d "$rootfs/.sealer-registry.XXXXXX")
  # shellcheck disable=SC2064  # expand now: the path is fixed
  trap "rm -rf '$staging'" EXIT
  base64 -d | tar -x -C "$staging" --no-same-owner --no-same-permissions
  while IFS= read -r -d '' file; do
    file=${file#./}
    put_file "$staging/$file" "$rootfs/$file" "$(mode_for "$file")" >/dev/null
  done < <(cd "$staging" && find . -type f -print0 | sort -z)
}

main "$@"
