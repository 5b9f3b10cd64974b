# shellcheck shell=bash
# Shared preamble of every script the program runs. The program sends it ahead of the script body
# in one `bash -c` (one SSH session per change); run by hand, each script sources it from here.
set -euo pipefail

SCRIPT_NAME=${SCRIPT_NAME:-${0##*/}}

info() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }
fatal() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}
# Over SSH this line is the only stack trace an operator gets.
on_err() { printf '%s: failed at line %s: %s (exit %s)\n' "$SCRIPT_NAME" "$1" "$2" "$3" >&2; }
trap 'on_err "$LINENO" "$BASH_COMMAND" "$?"' ERR

# Installs $1 as $2 with mode $3 unless $2 already has that content and mode. Renames into place
# (atomic on one filesystem); the same content with another mode only gets its mode (the file,
# which a running registry may hold mounted, stays). Prints "changed" on stdout when it acted.
put_file() {
  local src=$1 dest=$2 mode=$3
  if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
    if [[ "$(stat -c %a "$dest")" == "${mode#0}" ]]; then
      info "unchanged: $dest"
      return 0
    fi
    chmod "$mode" "$dest"
    info "mode $mode: $dest"
    echo changed
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.sealer-new"
  mv -f "$dest.sealer-new" "$dest"
  info "wrote: $dest"
  echo changed
}
