#!/usr/bin/env bash
# Fills master0's registry from the image store, a registry that holds the cluster's images:
# each ref (REPOSITORY:TAG@DIGEST) is copied with skopeo from STORE (REPOSITORY@DIGEST) into
# master0's running registry (REPOSITORY:TAG), every manifest and blob by its digest
# (--preserve-digests: the tag resolves to the pinned digest or the copy fails); a ref master0
# already serves with that digest is not copied again. Then master0's replica stamp
# (lib/replica.sh) says "self": the other deploy hosts pull this tree host to host.
# Runs on the machine that runs `pulumi up`, after master0's registry was launched. It reaches
# that registry through one SSH connection to master0 (a ControlMaster that also carries the stamp
# commands) forwarding a local port to master0's 127.0.0.1:REGISTRY_PORT: only SSH to the hosts
# is needed, as for every other step, and the registry's certificate names 127.0.0.1.
# Usage: fill-from-store.sh [--key-stdin | --password-stdin] [--host-key LINE]
#                           [--jump USER@HOST:PORT] [--sudo] [--dest-tls MODE]
#                           [--data-generation D] USER@HOST SSH_PORT ROOTFS STORE REGISTRY_PORT REF...
# --data-generation: the program's probe of master0's tree (scripts/probe-trees.sh), written to
# <registry>/.sealer-generation after the stamp (see pull-data.sh). Prints "tree <sha256>" (the
# stamp's) on stdout after the fill.
# STORE: HOST:PORT of the store (HTTPS, always verified). --dest-tls, how master0's registry is
# reached through the tunnel: verify (default; stdin's dest-ca, the certificate names 127.0.0.1),
# skip-verify (HTTPS unverified: a brought certificate that does not name 127.0.0.1, e.g.
# sealer's own; the tunnel's far end is master0, checked by SSH), http (insecure mode).
# stdin, one "NAME BASE64" line each: ssh (the key or the password: --key-stdin/--password-stdin),
# store-auth and dest-auth (base64 of USER:PASSWORD at the store and at master0's registry, as a
# containers auth.json holds them), store-ca (PEM the store's certificate chains to; none: the
# system's trust), dest-ca (the cluster's CA). Each becomes a 0600 file in this script's private
# temp dir: never argv, never the environment.
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
SSH_SECRET=""
DEST_TLS=verify
GENERATION=""
# A hung store must not hang `pulumi up`: one ref's copy gets this long (skopeo's own timeout).
COPY_TIMEOUT=${FILL_COPY_TIMEOUT:-30m}
PARALLEL=4
MANIFEST_TYPES="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

CONTROL=()

cleanup() {
  if ((${#CONTROL[@]})); then "${CONTROL[@]}" -O exit _ >/dev/null 2>&1 || true; fi
  [[ -z "$WORK" ]] || rm -rf "$WORK"
}

parse_flags() {
  while (($#)); do
    case "$1" in
      --key-stdin) SSH_SECRET=key; shift ;;
      --password-stdin) SSH_SECRET=password; shift ;;
      --host-key) HOST_KEY=$2; shift 2 ;;
      --jump) JUMP=$2; shift 2 ;;
      --sudo) SUDO="sudo -n"; shift ;;
      --dest-tls) DEST_TLS=$2; shift 2 ;;
      --data-generation) GENERATION=$2; shift 2 ;;
      *) break ;;
    esac
  done
  REST=("$@")
}

# stdin's NAME BASE64 lines -> $WORK/in/NAME (0600).
read_inputs() {
  local name value
  mkdir -m 0700 "$WORK/in"
  while read -r name value; do
    case "$name" in
      store-auth | dest-auth)
        [[ "$value" =~ ^[A-Za-z0-9+/=]+$ ]] || fatal "stdin line $name is not base64"
        (umask 077 && printf '%s' "$value" >"$WORK/in/$name") ;;
      ssh | store-ca | dest-ca)
        (umask 077 && base64 -d <<<"$value" >"$WORK/in/$name") || fatal "stdin line $name is not base64" ;;
      *) fatal "unexpected stdin line '${name:0:20}'" ;;
    esac
  done
  case "$SSH_SECRET" in
    key) KEY_FILE="$WORK/in/ssh" ;;
    password) PASSWORD_FILE="$WORK/in/ssh"; use_askpass ;;
  esac
  if [[ -n "$SSH_SECRET" && ! -s "$WORK/in/ssh" ]]; then
    fatal "--$SSH_SECRET-stdin given but stdin has no ssh line"
  fi
}

# auth.json (0600) of the store and of DEST (HOST:PORT), from the base64 logins.
write_auth() {
  local dest=$1 store=$2 entries=()
  [[ ! -f "$WORK/in/store-auth" ]] || entries+=("$(printf '"%s": {"auth": "%s"}' "$store" "$(cat "$WORK/in/store-auth")")")
  [[ ! -f "$WORK/in/dest-auth" ]] || entries+=("$(printf '"%s": {"auth": "%s"}' "$dest" "$(cat "$WORK/in/dest-auth")")")
  (IFS=,; umask 077 && printf '{"auths": {%s}}\n' "${entries[*]}" >"$WORK/auth.json")
  (umask 077 && if [[ -f "$WORK/in/dest-auth" ]]; then
    printf 'Authorization: Basic %s\n' "$(cat "$WORK/in/dest-auth")"
  fi >"$WORK/dest-header")
}

# The skopeo flags of both ends. The refs are pinned by digest, so the policy accepts any
# signature state: the digest is the check (a machine without /etc/containers/policy.json works).
skopeo_flags() {
  printf '{"default": [{"type": "insecureAcceptAnything"}]}\n' >"$WORK/policy.json"
  FLAGS=(--policy "$WORK/policy.json" --command-timeout "$COPY_TIMEOUT")
  COPY=(--authfile "$WORK/auth.json" --retry-times 2)
  if [[ -f "$WORK/in/store-ca" ]]; then
    mkdir -m 0700 "$WORK/store-certs"
    cp "$WORK/in/store-ca" "$WORK/store-certs/ca.crt"
    COPY+=(--src-cert-dir "$WORK/store-certs")
  fi
  case "$DEST_TLS" in
    verify)
      [[ -f "$WORK/in/dest-ca" ]] || fatal "--dest-tls verify needs a dest-ca line on stdin"
      mkdir -m 0700 "$WORK/dest-certs"
      cp "$WORK/in/dest-ca" "$WORK/dest-certs/ca.crt"
      COPY+=(--dest-cert-dir "$WORK/dest-certs")
      CURL_TLS=(--cacert "$WORK/dest-certs/ca.crt") SCHEME=https ;;
    skip-verify) COPY+=(--dest-tls-verify=false) CURL_TLS=(--insecure) SCHEME=https ;;
    http) COPY+=(--dest-tls-verify=false) CURL_TLS=() SCHEME=http ;;
    *) fatal "--dest-tls $DEST_TLS: not verify, skip-verify or http" ;;
  esac
}

# The digest DEST (127.0.0.1:PORT, the tunnel) serves for REPOSITORY:TAG ("" when none): one
# HEAD with curl (the login as a header file, the cluster CA), far cheaper than a skopeo run.
served_digest() {
  local dest=$1 name=$2
  curl -sS -I --max-time 30 "${CURL_TLS[@]}" -H @"$WORK/dest-header" -H "Accept: $MANIFEST_TYPES" \
    "$SCHEME://$dest/v2/${name%:*}/manifests/${name##*:}" 2>/dev/null |
    tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# Copies one ref unless DEST serves it already; writes "copied" or "present" to $WORK/done.N.
copy_ref() {
  local store=$1 dest=$2 ref=$3 n=$4
  local name=${ref%@*} digest=${ref##*@}
  local repo=${name%:*}
  if [[ "$(served_digest "$dest" "$name")" == "$digest" ]]; then
    echo present >"$WORK/done.$n"
    return 0
  fi
  skopeo "${FLAGS[@]}" copy -q --all --preserve-digests "${COPY[@]}" \
    "docker://$store/$repo@$digest" "docker://$dest/$name" >"$WORK/copy.$n.log" 2>&1 ||
    fatal "copy of $ref from $store failed: $(tail -n 3 "$WORK/copy.$n.log" | tr '\n' ' ')"
  [[ "$(served_digest "$dest" "$name")" == "$digest" ]] ||
    fatal "master0 serves $name with another digest than $digest after the copy"
  echo copied >"$WORK/done.$n"
}

# Every ref, PARALLEL at a time (each copy is mostly round trips: they overlap well); fails
# after the running copies end if any failed.
copy_all() {
  local store=$1 dest=$2 n=0 failed=0 pids=() ref
  shift 2
  for ref in "$@"; do
    copy_ref "$store" "$dest" "$ref" "$n" &
    pids+=("$!")
    n=$((n + 1))
    if ((${#pids[@]} >= PARALLEL)); then
      wait "${pids[0]}" || failed=1
      pids=("${pids[@]:1}")
    fi
  done
  for ref in "${pids[@]}"; do wait "$ref" || failed=1; done
  ((failed == 0)) || fatal "the fill from $store did not complete (no stamp written)"
  COPIED=$(cat "$WORK"/done.* 2>/dev/null | grep -c copied || true)
  PRESENT=$(cat "$WORK"/done.* 2>/dev/null | grep -c present || true)
}

# A free local TCP port for the forward (the kernel picks it; ExitOnForwardFailure catches a race).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One SSH connection to the host (ControlMaster in $WORK) with a local forward to its registry.
open_tunnel() {
  local target=$1 registry_port=$2 local_port=$3
  CONTROL=("${SSH_CMD[@]}" -S "$WORK/ctl")
  "${CONTROL[@]}" -M -f -N -o ExitOnForwardFailure=yes \
    -L "127.0.0.1:$local_port:127.0.0.1:$registry_port" "$target" >"$WORK/tunnel.log" 2>&1 ||
    fatal "cannot open the SSH connection to $target: $(tail -n 2 "$WORK/tunnel.log" | tr '\n' ' ')"
}

main() {
  WORK=$(mktemp -d)
  # An interrupted step (the engine cancelled) still closes the SSH connection it opened.
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  parse_flags "$@"
  set -- "${REST[@]}"
  [[ -z "$GENERATION" || "$GENERATION" =~ ^[A-Za-z0-9._:-]{1,200}$ ]] || fatal "bad --data-generation: $GENERATION"
  (($# >= 5)) || fatal "usage: fill-from-store.sh [flags] USER@HOST SSH_PORT ROOTFS STORE REGISTRY_PORT REF..."
  local target=$1 port=$2 rootfs=$3 store=$4 registry_port=$5
  shift 5
  read_inputs
  local host=${target#*@} registry local_port dest
  mapfile -t SSH_CMD < <(ssh_command "$host" "$port")
  local_port=$(free_port)
  dest="127.0.0.1:$local_port"
  write_auth "$dest" "$store"
  skopeo_flags
  open_tunnel "$target" "$registry_port" "$local_port"
  registry=$(printf '%q' "$rootfs/registry")
  # No stamp while the registry's tree changes (as pull-data.sh and sync-data.sh).
  "${CONTROL[@]}" "$target" "$(as_root "mkdir -p $registry && rm -f $registry/.sealer-replica && echo store >$registry/.sealer-replica.run")"
  copy_all "$store" "$dest" "$@"
  info "$COPIED refs copied from $store, $PRESENT already served by $host"
  "${CONTROL[@]}" "$target" "$(as_root "bash -c $(printf '%q' "$(declare -f tree_list write_stamp)
tree_list $registry >$registry/.sealer-replica.list && write_stamp $registry self $registry/.sealer-replica.list && rm -f $registry/.sealer-replica.list $registry/.sealer-replica.run
$([[ -z "$GENERATION" ]] || echo "echo $GENERATION >$registry/.sealer-generation.new && mv -f $registry/.sealer-generation.new $registry/.sealer-generation")
sed -n 's/.*\"tree\": \"\([0-9a-f]\{64\}\)\".*/tree \1/p' $registry/.sealer-replica")")"
  echo "filled $# refs on $host ($COPIED copied, $PRESENT present)"
}

main "$@"
