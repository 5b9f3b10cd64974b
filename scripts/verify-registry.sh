#!/usr/bin/env bash
# Proves from this node that the registry serves the boot history: /v2/ answers through the
# node's own name resolution, TLS verified with the CA the node trusts, with auth; every
# REPO:TAG@DIGEST resolves to its manifest with that digest.
# Also checks that this node resolves DOMAIN to MASTER0.
# Usage: verify-registry.sh DOMAIN PORT SCHEME USERNAME MASTER0 REF...
#        (stdin: the password, if USERNAME)
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi

readonly ACCEPT="application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"

# The password goes into a curl config file (0600, removed on exit), never onto a command line.
write_curl_config() {
  local cfg=$1 domain=$2 port=$3 scheme=$4 user=$5 pass=""
  umask 077
  : >"$cfg"
  if [[ "$scheme" == https ]]; then
    printf 'cacert = "/etc/docker/certs.d/%s:%s/ca.crt"\n' "$domain" "$port" >>"$cfg"
  fi
  if [[ -n "$user" ]]; then
    IFS= read -r pass || true
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

main() {
  local domain=$1 port=$2 scheme=$3 user=$4 master0=$5 resolved
  shift 5
  local base="$scheme://$domain:$port" cfg ref repo tag want got failed=0
  cfg=$(mktemp)
  # shellcheck disable=SC2064  # expand now: the path is fixed
  trap "rm -f '$cfg'" EXIT
  resolved=$(getent hosts "$domain" | awk '{ print $1; exit }')
  [[ "$resolved" == "$master0" ]] || fatal "$domain resolves to '${resolved:-nothing}' here, not to master0 $master0"
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
  echo "verified $#"
}

main "$@"
