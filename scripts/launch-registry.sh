#!/usr/bin/env bash
# Launches the registry on this host through the rootfs' own init-registry.sh (sealer's contract:
# init-registry.sh PORT VOLUME DOMAIN). sealer's script replaces a running registry every time,
# so this step checks first: when the registry was launched here with this material and answers
# on the port, it does nothing. A registry from other material (or from sealer itself) is stopped
# before the launch.
# Usage: launch-registry.sh ROOTFS PORT DOMAIN MATERIAL_FINGERPRINT
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi
if ! declare -F stop_registry >/dev/null; then
  # shellcheck source=lib/registry.sh
  source "${BASH_SOURCE[0]%/*}/lib/registry.sh"
fi

readonly ANSWER_WAIT_S=15

# /v2/ on this host answers 200, or 401 with auth on: over TLS when the rootfs holds the cert.
registry_answers() {
  local rootfs=$1 port=$2 domain=$3 scheme=http code
  [[ -f "$rootfs/certs/$domain.crt" ]] && scheme=https
  code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$scheme://127.0.0.1:$port/v2/" 2>/dev/null || true)
  [[ "$code" == 200 || "$code" == 401 ]]
}

main() {
  local rootfs=$1 port=$2 domain=$3 fingerprint=$4
  local stamp="$rootfs/etc/.sealer-registry-material" deadline
  [[ -f "$rootfs/scripts/init-registry.sh" ]] ||
    fatal "$rootfs/scripts/init-registry.sh is missing: is $rootfs a sealer rootfs?"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$fingerprint" ]]; then
    if registry_answers "$rootfs" "$port" "$domain"; then
      info "registry already runs with this material ($fingerprint) on :$port: skipped init-registry.sh"
      return 0
    fi
    info "registry launched with this material does not answer on :$port: launching it again"
  else
    # A running registry keeps the cert and htpasswd it started with; one we did not start
    # (sealer's own in an adopted cluster) may not be the rootfs script's to replace.
    info "registry material is new here ($fingerprint): stopping any running registry"
    stop_registry "$rootfs"
  fi
  # Dropped first: an interrupted launch leaves no stamp, so the next run launches again.
  rm -f "$stamp"
  mkdir -p "$rootfs/registry"
  (cd "$rootfs/scripts" && bash init-registry.sh "$port" "$rootfs/registry" "$domain" </dev/null)
  # sealer's script only checks that its container runs: wait until the registry answers.
  deadline=$((SECONDS + ANSWER_WAIT_S))
  until registry_answers "$rootfs" "$port" "$domain"; do
    ((SECONDS < deadline)) ||
      fatal "init-registry.sh succeeded but nothing answers /v2/ on 127.0.0.1:$port within ${ANSWER_WAIT_S}s"
    sleep 0.2
  done
  printf '%s\n' "$fingerprint" >"$stamp"
  info "registry up on :$port for $domain"
}

main "$@"
