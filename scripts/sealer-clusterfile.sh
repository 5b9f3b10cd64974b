#!/usr/bin/env bash
# Reads and rewrites sealer's own Clusterfile on this host, for `recover`/`watch` (cli/sealer_clusterfile.py):
# after a recovery it must name the new master0 first. The edit itself is made by the CLI; this
# script only lists the files and replaces one, and only when it still holds what was read.
# Usage: sealer-clusterfile.sh read NAME
#          stdout: one `<path>\t<base64 of the file>` line per Clusterfile present:
#          ~root/.sealer/Clusterfile (v0.9+) and ~root/.sealer/NAME/Clusterfile (v0.8)
#        sealer-clusterfile.sh write NAME PATH SHA256   (the new text on stdin)
#          replaces PATH (one of those two) if its sha256 is still SHA256; same mode and owner.
#          A file that already holds the new text is left alone (same bytes, same mtime).
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi

# sealer keeps its files under the home of the user that ran it; it runs as root (it writes
# /etc/hosts and the rootfs), so root's home, whoever logs in.
candidates() {
  local name=$1 home
  home=$(getent passwd root | cut -d: -f6)
  printf '%s\n' "${home:-/root}/.sealer/Clusterfile" "${home:-/root}/.sealer/$name/Clusterfile"
}

read_files() {
  local name=$1 path
  while IFS= read -r path; do
    if [[ -f "$path" ]]; then
      printf '%s\t%s\n' "$path" "$(base64 -w0 < "$path")"
    else
      info "absent: $path"
    fi
  done < <(candidates "$name")
}

# The EXIT trap runs after write_file returned: the temp file's name must outlive its locals.
TMP_FILE=""

write_file() {
  local name=$1 path=$2 expected=$3 tmp current
  if ! candidates "$name" | grep -qxF -- "$path"; then
    fatal "$path is not one of sealer's Clusterfiles on this host"
  fi
  [[ -f "$path" ]] || fatal "$path is gone since it was read"
  tmp=$(mktemp "${path%/*}/.Clusterfile.sealer-registry.XXXXXX")
  TMP_FILE=$tmp
  trap 'rm -f -- "$TMP_FILE"' EXIT
  cat > "$tmp"
  if cmp -s "$tmp" "$path"; then
    info "unchanged: $path"
    return 0
  fi
  current=$(sha256sum < "$path" | cut -c1-64)
  if [[ "$current" != "$expected" ]]; then
    fatal "$path changed since it was read (sha256 $current, read as $expected): not overwritten; rerun"
  fi
  chmod --reference="$path" "$tmp"
  chown --reference="$path" "$tmp"
  mv -f "$tmp" "$path"
  info "wrote: $path"
}

main() {
  local action=${1:-}
  case "$action" in
    read) [[ $# -eq 2 ]] || fatal "usage: read NAME"; read_files "$2" ;;
    write) [[ $# -eq 4 ]] || fatal "usage: write NAME PATH SHA256"; write_file "$2" "$3" "$4" ;;
    *) fatal "unknown action '$action' (read|write)" ;;
  esac
}

main "$@"
