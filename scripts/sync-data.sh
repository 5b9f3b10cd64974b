#!/usr/bin/env bash
# Copies registry data from the local image store into a host's rootfs registry with rsync over
# SSH: the union of the given images, incremental (unchanged files are not sent), atomic (rsync
# writes each file under a temporary name and, with --delay-updates, renames them all at the end),
# and verified (every blob sent is hashed on the host and must equal its name).
# Runs on the machine that runs `pulumi up`.
# Usage: sync-data.sh [--key-file PATH | --key-stdin | --password-stdin] [--host-key LINE]
#                     [--jump USER@HOST:PORT] [--sudo] [--stamp-self]
#                     USER@HOST PORT ROOTFS STORE IMAGE_HEX...
# --stamp-self: the host is the cluster's source (master0): its replica stamp (lib/replica.sh) is
# removed before the copy and written as "source": "self" after the verification.
# --password-stdin: log in with the password on stdin; ssh gets it from an askpass helper that
# reads a 0600 file in this script's private temp dir (never argv, never the environment).
# --sudo: USER is not root; the commands and rsync's receiver run through `sudo -n`.
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
  # shellcheck source=lib/replica.sh
  source "${BASH_SOURCE[0]%/*}/lib/replica.sh"
  # shellcheck source=lib/ssh-client.sh
  source "${BASH_SOURCE[0]%/*}/lib/ssh-client.sh"
fi

KEY_FILE=""
PASSWORD_FILE=""
HOST_KEY=""
JUMP=""
SUDO=""
STAMP=""
WORK=""

cleanup() { [[ -z "$WORK" ]] || rm -rf "$WORK"; }

parse_flags() {
  while (($#)); do
    case "$1" in
      --key-file) KEY_FILE=$2; shift 2 ;;
      --key-stdin) KEY_FILE="$WORK/id"; (umask 077 && cat >"$KEY_FILE"); shift ;;
      --password-stdin) PASSWORD_FILE="$WORK/password"; (umask 077 && cat >"$PASSWORD_FILE"); shift ;;
      --host-key) HOST_KEY=$2; shift 2 ;;
      --jump) JUMP=$2; shift 2 ;;
      --sudo) SUDO="sudo -n"; shift ;;
      --stamp-self) STAMP=1; shift ;;
      *) break ;;
    esac
  done
  REST=("$@")
}

main() {
  WORK=$(mktemp -d)
  trap cleanup EXIT
  parse_flags "$@"
  set -- "${REST[@]}"
  [[ -z "$PASSWORD_FILE" ]] || use_askpass
  local target=$1 port=$2 rootfs=$3 store=$4
  shift 4
  local host=${target#*@} sources=() hex ssh_cmd dest rsync_path=()
  for hex in "$@"; do
    [[ -d "$store/$hex/docker" ]] || fatal "image store $store has no data for sha256:$hex"
    sources+=("$store/$hex/docker")
  done
  mapfile -t ssh_cmd < <(ssh_command "$host" "$port")
  dest=$(printf '%q' "$rootfs/registry")
  # One SSH session: make the target directory and end any rsync receiver an interrupted earlier
  # copy left writing into it (its session is dead: this step is the replica's only writer), then
  # rsync's own session copies. Only receivers that see this mount namespace's directory: hosts
  # that share a kernel (containers, the lab) keep theirs. Wait until they are gone (5 s, then
  # SIGKILL): on SIGTERM a receiver's cleanup keeps its partial file as .~tmp~/<name>, and done
  # while the new copy ran it overwrote the new copy's finished file there, which then went into
  # place truncated.
  local receivers="--ns \$\$ --nslist mnt -x -f 'rsync --server .* [.] '$dest/" unstamp="" stamp=""
  if [[ -n "$STAMP" ]]; then
    # As pull-data.sh: no stamp while the copy writes, and the mark of an unfinished copy.
    unstamp="rm -f $dest/.sealer-replica && echo store >$dest/.sealer-replica.run && "
    stamp="bash -c $(printf '%q' "$(declare -f tree_list write_stamp)
tree_list $dest >$dest/.sealer-replica.list && write_stamp $dest self $dest/.sealer-replica.list && rm -f $dest/.sealer-replica.list $dest/.sealer-replica.run")"
  fi
  "${ssh_cmd[@]}" "$target" "$(as_root "mkdir -p $dest && ${unstamp}if command -v pkill >/dev/null; then pkill $receivers || true; for i in \$(seq 50); do pgrep $receivers >/dev/null || break; sleep 0.1; done; pkill --signal KILL $receivers || true; fi")"
  [[ -z "$SUDO" ]] || rsync_path=(--rsync-path="$SUDO rsync")
  rsync -a --delay-updates --out-format='%n' -e "$(printf '%q ' "${ssh_cmd[@]}")" "${rsync_path[@]}" \
    "${sources[@]}" "$target:$rootfs/registry/" >"$WORK/sent"
  grep -E '/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data$' "$WORK/sent" >"$WORK/blobs" || true
  info "$(wc -l <"$WORK/sent") paths sent, $(wc -l <"$WORK/blobs") blobs; verifying them on $host"
  # One more session: remove the partial files an interrupted copy kept under rsync's .~tmp~ dirs
  # (never renamed into place now that a copy completed), then hash what was sent; a blob whose
  # content differs from its name fails the step. openssl hashes ~5x faster than coreutils'
  # sha256sum where the CPU has SHA extensions; one hasher per core, 16 paths each, so each
  # writes its lines (< 4 KiB) in one atomic pipe write.
  "${ssh_cmd[@]}" "$target" "$(as_root "cd $dest && find . -depth -type d -name .~tmp~ -exec rm -rf {} + && if command -v openssl >/dev/null; then h='openssl dgst -sha256 -r'; else h=sha256sum; fi && xargs -r -d '\n' -P \"\$(nproc)\" -n 16 \$h")" \
    <"$WORK/blobs" |
    awk '{ sub(/^\*/, "", $2); n = split($2, p, "/"); if (p[n - 1] != $1) { print "corrupt blob: " $2; bad++ } }
         END { exit bad > 0 }' >&2 || fatal "blob verification failed on $host"
  if [[ -n "$stamp" ]]; then
    # Verified: this host is the source, "self" (one more session, for master0 only).
    "${ssh_cmd[@]}" "$target" "$(as_root "$stamp")"
    info "source stamp written on $host"
  fi
  echo "synced $# images to $host"
}

main "$@"
