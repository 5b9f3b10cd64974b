#!/usr/bin/env bash
# Reads the registry data of deploy hosts, read-only, for the program's plan: run at program time
# (pulumi-command's `local.run_output`, on preview and up alike) on the machine that runs
# `pulumi`, one SSH session per host. Touches nothing on the hosts.
# Usage: probe-trees.sh [--lists] ROOTFS --host IP PORT USER [FLAG...] [--host ...]...
#   FLAG: --key-stdin | --password-stdin (which secret the host's stdin line holds), --sudo,
#         --host-key LINE, --jump USER@HOST:PORT (SshAccess.rsync_flags).
#   --lists: also print each host's tree list (gzip + base64): the program computes the union of
#     the masters' trees from them (HA).
# stdin: one line per host, "ssh IP BASE64" (the key or the password, as the host's flag says):
#   never argv, never the environment; each becomes a 0600 file of a private temp dir.
# stdout, per host (in the order given):
#   host IP tree SHA256 stamp SHA256|- generation G|- files N
#   ids IP [ID...]            <rootfs>/cache/registry flags (sealer's: image data that reached it)
#   list IP BASE64            (--lists) gzip of lib/replica.sh's tree_list lines
#   or, when the host cannot be read: unreachable IP REASON
# SHA256 = sha256 of tree_list's lines (the replica stamp's "tree"); stamp = the tree in the
# host's .sealer-replica (- when none); generation = <registry>/.sealer-generation (written by the
# data steps: the value they last ran with).
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
WORK=""
LISTS=0

cleanup() { [[ -z "$WORK" ]] || rm -rf "$WORK"; }

# stdin's "ssh IP BASE64" lines -> $WORK/in/IP (0600).
read_secrets() {
  local kind ip value
  mkdir -m 0700 "$WORK/in"
  while read -r kind ip value; do
    [[ -n "$kind" ]] || continue
    [[ "$kind" == ssh && "$ip" =~ ^[0-9a-fA-F.:]+$ ]] || fatal "unexpected stdin line '${kind:0:20}'"
    (umask 077 && base64 -d <<<"$value" >"$WORK/in/$ip") || fatal "stdin line for $ip is not base64"
  done
}

# What runs on the host (as root): stamp tree, generation, flags, then the tree list.
remote_script() {
  local rootfs=$1 registry
  registry=$(printf '%q' "$rootfs/registry")
  cat <<REMOTE
$(declare -f tree_list)
sed -n 's/.*"tree": "\([0-9a-f]\{64\}\)".*/\1/p' $registry/.sealer-replica 2>/dev/null | grep . || echo -
head -c 200 $registry/.sealer-generation 2>/dev/null | tr -cd '[:alnum:]._:-' | grep . || echo -
ls -1 $(printf '%q' "$rootfs/cache/registry") 2>/dev/null | grep -E '^[0-9a-f]{64}$' | tr '\n' ' '; echo
tree_list $registry
REMOTE
}

# probe_host ROOTFS IP PORT USER FLAG...: the host's lines on stdout.
probe_host() {
  local rootfs=$1 ip=$2 port=$3 user=$4 secret=""
  shift 4
  KEY_FILE="" PASSWORD_FILE="" HOST_KEY="" JUMP="" SUDO=""
  unset SSH_ASKPASS SSH_ASKPASS_REQUIRE
  while (($#)); do
    case "$1" in
      --key-stdin) secret=key; shift ;;
      --password-stdin) secret=password; shift ;;
      --sudo) SUDO="sudo -n"; shift ;;
      --host-key) HOST_KEY=$2; shift 2 ;;
      --jump) JUMP=$2; shift 2 ;;
      *) fatal "unknown flag for $ip: $1" ;;
    esac
  done
  [[ -n "$secret" && -s "$WORK/in/$ip" ]] || fatal "no ssh secret on stdin for $ip"
  if [[ "$secret" == key ]]; then
    KEY_FILE="$WORK/in/$ip"
  else
    PASSWORD_FILE="$WORK/in/$ip"
    use_askpass
  fi
  local ssh_cmd out="$WORK/out" err="$WORK/err" tree stamp generation ids
  mapfile -t ssh_cmd < <(ssh_command "$ip" "$port")
  if ! remote_script "$rootfs" | "${ssh_cmd[@]}" "$user@$ip" "$(as_root "bash -s")" >"$out" 2>"$err"; then
    printf 'unreachable %s %s\n' "$ip" "$(tail -n 1 "$err" | tr -cd '[:print:]' | cut -c1-200)"
    return 0
  fi
  stamp=$(sed -n 1p "$out")
  generation=$(sed -n 2p "$out")
  ids=$(sed -n 3p "$out")
  tail -n +4 "$out" >"$WORK/list"
  tree=$(sha256sum <"$WORK/list" | cut -d' ' -f1)
  printf 'host %s tree %s stamp %s generation %s files %s\n' "$ip" "$tree" "${stamp:--}" \
    "${generation:--}" "$(wc -l <"$WORK/list")"
  printf 'ids %s %s\n' "$ip" "${ids% }"
  if ((LISTS)); then
    printf 'list %s %s\n' "$ip" "$(gzip -n -c "$WORK/list" | base64 -w0)"
  fi
  info "$ip: $(wc -l <"$WORK/list") files, tree $tree"
}

main() {
  if [[ "${1:-}" == --lists ]]; then
    LISTS=1
    shift
  fi
  (($# >= 1)) || fatal "usage: probe-trees.sh [--lists] ROOTFS --host IP PORT USER [FLAG...]..."
  local rootfs=$1 spec=()
  shift
  WORK=$(mktemp -d)
  trap cleanup EXIT
  read_secrets
  [[ "${1:-}" == --host ]] || fatal "no --host after ROOTFS"
  while (($#)); do
    if [[ "$1" == --host ]]; then
      if ((${#spec[@]})); then probe_host "$rootfs" "${spec[@]}"; fi
      (($# >= 4)) || fatal "--host needs IP PORT USER"
      spec=("$2" "$3" "$4")
      shift 4
    else
      spec+=("$1")
      shift
    fi
  done
  probe_host "$rootfs" "${spec[@]}"
}

main "$@"
