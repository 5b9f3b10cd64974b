#!/usr/bin/env bash
# Proves from this node that the registry serves the boot history to a real client: checks that
# this node resolves DOMAIN to MASTER0, then pulls every REPO:TAG through DOMAIN:PORT with
# containerd (`ctr content fetch`: the manifest, the config and every layer, each digest-verified
# by containerd's content store; no unpack) and checks that the tag resolved to DIGEST. TLS is
# verified by the node's own hosts dir for DOMAIN:PORT (the CA and hosts.toml the program installed
# under the CRI config_path its containerd uses, lib/hosts-dir.sh);
# the credentials reach ctr as an Authorization header in a private copy of that directory, never
# on a command line. Pulls go to containerd namespace sealer-registry-verify, emptied and removed
# before and after. A node without a containerd daemon (docker only) and insecure mode (plain
# http) get the older check instead: each tag's manifest digest through curl, said in the output.
# Each --mirror is a warm standby that nodes' containerd tries after master0: over TLS verified by
# the same CA at https://MIRROR:PORT, every tag must resolve to its digest there too, and a blob
# upload must be refused (405: the registry is read-only). A warm standby held out of service by
# its stale gate (503, and distribution's /debug/health names <volume>/.sealer-stale) is reported
# and not checked.
# Each --registry is a read-write registry of sealer's HA layout (one on every master): over TLS
# by name (curl --resolve DOMAIN:PORT:IP, so sealer's certificate, which names only the domain,
# verifies), every tag must resolve to its digest there. MASTER0 "-" (HA): the domain must resolve
# here, to whatever sealer mapped it (this master, or lvscare's VIP on a node).
# --entry ADDRESS: this node reaches the registry through its node-local entry point (HAProxy on
# ADDRESS, in front of master0 and the warm standbys): the domain must resolve to ADDRESS, and
# the pulls go through it (to master0 while master0 answers).
# Usage: verify-registry.sh [--mirror IP]... [--registry IP]... [--entry ADDRESS] DOMAIN PORT SCHEME USERNAME MASTER0 REF...
#        (stdin: the password, if USERNAME)
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
  # shellcheck source=lib/containerd.sh
  source "${BASH_SOURCE[0]%/*}/lib/containerd.sh"
  # shellcheck source=lib/trust.sh
  source "${BASH_SOURCE[0]%/*}/lib/trust.sh"
  # shellcheck source=lib/hosts-dir.sh
  source "${BASH_SOURCE[0]%/*}/lib/hosts-dir.sh"
fi

readonly ACCEPT="application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"
readonly NAMESPACE=sealer-registry-verify
# One image's pull (all its layers) must finish within this; a stuck transfer fails the step.
readonly PULL_TIMEOUT_S=600

WORK=""
PASSWORD=""
NAMESPACE_USED=0
MIRRORS=()
REGISTRIES=()

cleanup() {
  ((NAMESPACE_USED == 0)) || empty_namespace
  [[ -z "$WORK" ]] || rm -rf "$WORK"
}

# --------------------------------------------------------------------------- containerd pull

# Removes every image, lease and blob of our namespace, then the namespace (it must be empty).
empty_namespace() {
  local image lease blob
  ctr namespaces ls -q 2>/dev/null | grep -qx "$NAMESPACE" || return 0
  for image in $(ctr -n "$NAMESPACE" images ls -q 2>/dev/null || true); do
    timeout 60 ctr -n "$NAMESPACE" images rm --sync "$image" >/dev/null 2>&1 || true
  done
  for lease in $(ctr -n "$NAMESPACE" leases ls -q 2>/dev/null || true); do
    timeout 60 ctr -n "$NAMESPACE" leases rm --sync "$lease" >/dev/null 2>&1 || true
  done
  for blob in $(ctr -n "$NAMESPACE" content ls -q 2>/dev/null || true); do
    timeout 60 ctr -n "$NAMESPACE" content rm "$blob" >/dev/null 2>&1 || true
  done
  timeout 30 ctr namespaces rm "$NAMESPACE" >/dev/null 2>&1 ||
    warn "containerd namespace $NAMESPACE is not empty; it is emptied on the next verification"
}

# A private copy of this node's hosts dir for DOMAIN:PORT with the credentials added as an
# Authorization header, only where the request goes to DOMAIN:PORT itself (never to a mirror).
write_hosts_dir() {
  local domain=$1 port=$2 user=$3 src dest url token
  src="$(containerd_hosts_dir)/$domain:$port"
  [[ -f "$src/hosts.toml" ]] ||
    fatal "no $src/hosts.toml: containerd on this node does not trust $domain:$port"
  dest="$WORK/certs.d/$domain:$port"
  mkdir -p "$dest"
  cp -pR "$src"/. "$dest"/
  [[ -n "$user" ]] || return 0
  if grep -Eq '^[[:space:]]*\[(host\."[^"]*"\.)?header\]' "$src/hosts.toml"; then
    fatal "$src/hosts.toml has header tables of its own: cannot add the credentials"
  fi
  url="https://$domain:$port"
  token=$(printf '%s:%s' "$user" "$PASSWORD" | base64 | tr -d '\n')
  if grep -Eq "^[[:space:]]*server[[:space:]]*=[[:space:]]*\"$url/?\"" "$src/hosts.toml"; then
    printf '\n[header]\n  Authorization = "Basic %s"\n' "$token" >>"$dest/hosts.toml"
  fi
  if grep -Fq "[host.\"$url\"]" "$src/hosts.toml"; then
    printf '\n[host."%s".header]\n  Authorization = "Basic %s"\n' "$url" "$token" >>"$dest/hosts.toml"
  fi
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Pulls one ref; prints nothing on success, warns and returns 1 otherwise.
pull_ref() {
  local domain=$1 port=$2 ref=$3 want repo tag image got start took why rc=0
  want=${ref##*@}
  repo=${ref%@*}
  tag=${repo##*:}
  repo=${repo%:*}
  image="$domain:$port/$repo:$tag"
  start=$(now_ms)
  timeout "$PULL_TIMEOUT_S" ctr -n "$NAMESPACE" content fetch --hosts-dir "$WORK/certs.d" \
    "$image" >/dev/null 2>"$WORK/pull.err" || rc=$?
  if ((rc != 0)); then
    why=$(grep -E '^ctr: ' "$WORK/pull.err" | tail -n 1 || true)
    ((rc != 124)) || why="timed out after ${PULL_TIMEOUT_S}s"
    warn "$repo:$tag resolves to nothing through containerd (${why:-ctr exited $rc}), expected $want"
    return 1
  fi
  took=$(($(now_ms) - start))
  got=$(ctr -n "$NAMESPACE" images ls 2>/dev/null | awk -v i="$image" '$1 == i { print $3 " (" $4 " " $5 ")" }' || true)
  if [[ "${got%% *}" != "$want" ]]; then
    warn "$repo:$tag resolves to '${got:-nothing}' through containerd, expected $want"
    return 1
  fi
  info "pulled $image ${got#* } in ${took} ms: $want"
}

# Through the node entry point each pull is tried up to ENTRY_ATTEMPTS times, ENTRY_PAUSE_S apart
# (every failed attempt is logged): configure-node.sh may just have reloaded HAProxy, and a
# recovery has just restarted the new master0's registry read-write; on loaded masters their
# health checks may hold every server DOWN for a check or two (HAProxy then closes the connection:
# ctr says EOF). Seen at 3 + 500 in the bench: the deploy's first pull, then 2 of 5 pulls of a
# recovery's verification. The curl path waits for /v2/ the same way (wait_for_v2). Without an
# entry point each pull is tried once.
readonly ENTRY_ATTEMPTS=5
readonly ENTRY_PAUSE_S=3

# pull_through REF: pull_ref, tried as above.
pull_through() {
  local domain=$1 port=$2 entry=$3 ref=$4 attempt attempts=1
  [[ -z "$entry" ]] || attempts=$ENTRY_ATTEMPTS
  for attempt in $(seq "$attempts"); do
    pull_ref "$domain" "$port" "$ref" && return 0
    ((attempt < attempts)) || break
    info "attempt $attempt of $attempts through the entry point $entry failed; again in ${ENTRY_PAUSE_S}s"
    sleep "$ENTRY_PAUSE_S"
  done
  return 1
}

verify_with_containerd() {
  local domain=$1 port=$2 user=$3 entry=$4 ref failed=0 start count
  shift 4
  count=$#
  write_hosts_dir "$domain" "$port" "$user"
  NAMESPACE_USED=1
  empty_namespace
  start=$(now_ms)
  for ref in "$@"; do
    pull_through "$domain" "$port" "$entry" "$ref" || failed=$((failed + 1))
  done
  ((failed == 0)) || fatal "$failed of $count images did not pull through containerd from $domain:$port"
  info "pulled $count images through containerd from $domain:$port in $(($(now_ms) - start)) ms"
  echo "verified $count (containerd pull through $domain:$port; containerd here: $(containerd_certs_d_state))"
}

# --------------------------------------------------------------------------- curl (no containerd)

# The password goes into a curl config file (0600, removed on exit), never onto a command line.
write_curl_config() {
  local cfg=$1 domain=$2 port=$3 scheme=$4 user=$5 pass=$PASSWORD
  local dir="/etc/docker/certs.d/$domain:$port" ca crts
  : >"$cfg"
  if [[ "$scheme" == https ]]; then
    # The program's ca.crt, else the one *.crt there (sealer's <domain>.crt).
    ca="$dir/ca.crt"
    crts=("$dir"/*.crt)
    [[ -f "$ca" || ! -f "${crts[0]}" ]] || ca=${crts[0]}
    printf 'cacert = "%s"\n' "$ca" >>"$cfg"
  fi
  if [[ -n "$user" ]]; then
    pass=${pass//\\/\\\\}
    pass=${pass//\"/\\\"}
    printf 'user = "%s:%s"\n' "$user" "$pass" >>"$cfg"
  fi
}

wait_for_v2() {
  local cfg=$1 base=$2 attempt code
  for attempt in 1 2 3 4 5; do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -K "$cfg" "$base/v2/" || true)
    [[ "$code" == 200 ]] && return 0
    [[ "$code" != 401 ]] || fatal "$base/v2/ refused our credentials (401)"
    info "attempt $attempt: $base/v2/ answered ${code:-nothing}"
    sleep 1
  done
  fatal "$base/v2/ did not answer 200 (last: ${code:-nothing})"
}

manifest_digest() {
  local cfg=$1 url=$2
  curl -sS --max-time 10 -K "$cfg" -I -H "Accept: $ACCEPT" "$url" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}

verify_with_curl() {
  local domain=$1 port=$2 scheme=$3 user=$4 why=$5 ref repo tag want got failed=0
  shift 5
  local base="$scheme://$domain:$port" cfg="$WORK/curl.cfg"
  info "$why: checking each tag's manifest digest with curl instead of a pull"
  write_curl_config "$cfg" "$domain" "$port" "$scheme" "$user"
  wait_for_v2 "$cfg" "$base"
  for ref in "$@"; do
    want=${ref##*@}
    repo=${ref%@*}
    tag=${repo##*:}
    repo=${repo%:*}
    got=$(manifest_digest "$cfg" "$base/v2/$repo/manifests/$tag" || true)
    if [[ "$got" != "$want" ]]; then
      warn "$repo:$tag resolves to '${got:-nothing}', expected $want"
      failed=$((failed + 1))
    fi
  done
  ((failed == 0)) || fatal "$failed of $# images did not verify at $base"
  info "verified /v2/ and $# image references at $base"
  echo "verified $# (manifests with curl: $why)"
}

# ------------------------------------------------------------------------- warm standbys

# Whether MIRROR's registry is held out of service by its stale gate: /v2/ answers 503 for
# STALE_SETTLE_S (the gate lifts within about a second of its marker going: distribution's file
# check runs every second), and distribution's health report on the debug listener (sealer's
# container serves it on 0.0.0.0:5002) names the marker. A replica whose copy has not completed
# is out of service by design; any other 503 (or none of this) is a failure of the caller's.
readonly DEBUG_PORT=5002 STALE_SETTLE_S=3
mirror_is_gated() {
  local cfg=$1 mirror=$2 port=$3 code i
  for ((i = 0; i < STALE_SETTLE_S * 2; i++)); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -K "$cfg" "https://$mirror:$port/v2/" 2>/dev/null || true)
    [[ "$code" == 503 ]] || return 1
    sleep 0.5
  done
  curl -sS --max-time 5 "http://$mirror:$DEBUG_PORT/debug/health" 2>/dev/null | grep -q '/\.sealer-stale"'
}

# Every ref's manifest digest at https://MIRROR:PORT, and a refused upload. Prints a summary.
# A warm standby held out of service by its stale gate is said and skipped (nodes get 503 from
# it, so no stale tag); a complete one must answer.
verify_mirrors() {
  local domain=$1 port=$2 user=$3 mirror ref repo=library/verify tag want got code failed=0 gated=()
  shift 3
  local cfg="$WORK/mirror.cfg"
  write_curl_config "$cfg" "$domain" "$port" https "$user"
  for mirror in "${MIRRORS[@]}"; do
    if mirror_is_gated "$cfg" "$mirror" "$port"; then
      warn "warm standby $mirror is stale (its copy of master0's data has not completed): it answers 503 until one does; not checked"
      gated+=("$mirror")
      continue
    fi
    for ref in "$@"; do
      want=${ref##*@}
      repo=${ref%@*}
      tag=${repo##*:}
      repo=${repo%:*}
      got=$(manifest_digest "$cfg" "https://$mirror:$port/v2/$repo/manifests/$tag" || true)
      if [[ "$got" != "$want" ]]; then
        warn "warm standby $mirror: $repo:$tag resolves to '${got:-nothing}', expected $want"
        failed=$((failed + 1))
      fi
    done
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -K "$cfg" -X POST --data-binary '' \
      "https://$mirror:$port/v2/$repo/blobs/uploads/" || true)
    if [[ "$code" != 405 ]]; then
      warn "warm standby $mirror answers an upload with ${code:-nothing}, not 405: it is not read-only"
      failed=$((failed + 1))
    fi
  done
  ((failed == 0)) || fatal "$failed problems on the warm standbys ${MIRRORS[*]}"
  if ((${#gated[@]})); then
    info "warm standbys held out of service by their stale gate: ${gated[*]}"
    echo "verified $# on $((${#MIRRORS[@]} - ${#gated[@]})) warm standbys, ${#gated[@]} stale and out of service (${gated[*]})"
    return 0
  fi
  info "warm standbys ${MIRRORS[*]} serve the $# images read-only over TLS"
  echo "verified $# on ${#MIRRORS[@]} warm standbys (${MIRRORS[*]}): read-only, over TLS by IP"
}

# ------------------------------------------------------------------ HA: each master's registry

# Every ref's manifest digest at each --registry, reached by name at its address.
verify_registries() {
  local domain=$1 port=$2 scheme=$3 user=$4 ip ref repo tag want got failed=0
  shift 4
  local cfg="$WORK/registries.cfg"
  write_curl_config "$cfg" "$domain" "$port" "$scheme" "$user"
  for ip in "${REGISTRIES[@]}"; do
    printf 'resolve = "%s:%s:%s"\n' "$domain" "$port" "$ip" >"$cfg.$ip"
    cat "$cfg" >>"$cfg.$ip"
    wait_for_v2 "$cfg.$ip" "$scheme://$domain:$port"
    for ref in "$@"; do
      want=${ref##*@}
      repo=${ref%@*}
      tag=${repo##*:}
      repo=${repo%:*}
      got=$(manifest_digest "$cfg.$ip" "$scheme://$domain:$port/v2/$repo/manifests/$tag" || true)
      if [[ "$got" != "$want" ]]; then
        warn "registry on $ip: $repo:$tag resolves to '${got:-nothing}', expected $want"
        failed=$((failed + 1))
      fi
    done
  done
  ((failed == 0)) || fatal "$failed problems on the registries of ${REGISTRIES[*]}"
  info "the registries of ${REGISTRIES[*]} serve the $# images"
  echo "verified $# on each of ${#REGISTRIES[@]} registries (${REGISTRIES[*]}), by name at each address"
}

main() {
  local entry=""
  while [[ "${1:-}" == --mirror || "${1:-}" == --registry || "${1:-}" == --entry ]]; do
    [[ "${2:-}" =~ ^[0-9a-fA-F.:]+$ ]] || fatal "$1 needs an IP address, got '${2:-}'"
    case $1 in
      --mirror) MIRRORS+=("$2") ;;
      --registry) REGISTRIES+=("$2") ;;
      --entry) entry=$2 ;;
    esac
    shift 2
  done
  local domain=$1 port=$2 scheme=$3 user=$4 master0=$5 resolved
  shift 5
  umask 077
  WORK=$(mktemp -d)
  trap cleanup EXIT
  resolved=$(getent hosts "$domain" | awk '{ print $1; exit }' || true)
  if [[ "$master0" == - ]]; then
    [[ -n "$resolved" ]] || fatal "$domain resolves to nothing here"
  elif [[ -n "$entry" ]]; then
    [[ "$resolved" == "$entry" ]] ||
      fatal "$domain resolves to '${resolved:-nothing}' here, not to the node entry point $entry"
  else
    [[ "$resolved" == "$master0" ]] || fatal "$domain resolves to '${resolved:-nothing}' here, not to master0 $master0"
  fi
  if [[ -n "$user" ]]; then
    IFS= read -r PASSWORD || true
  fi
  if [[ "$scheme" != https ]]; then
    verify_with_curl "$domain" "$port" "$scheme" "$user" "insecure mode (plain http)" "$@"
  elif ! containerd_answers; then
    verify_with_curl "$domain" "$port" "$scheme" "$user" "no containerd answers on this node" "$@"
  else
    verify_with_containerd "$domain" "$port" "$user" "$entry" "$@"
  fi
  if ((${#MIRRORS[@]})) && [[ "$scheme" == https ]]; then
    verify_mirrors "$domain" "$port" "$user" "$@"
  fi
  if ((${#REGISTRIES[@]})); then
    verify_registries "$domain" "$port" "$scheme" "$user" "$@"
  fi
}

main "$@"
