#!/usr/bin/env bash
# Launches the registry on this host through the rootfs' own init-registry.sh (sealer's contract:
# init-registry.sh PORT VOLUME DOMAIN). sealer's script replaces a running registry every time,
# so this step checks first and does nothing when the registry already serves this material:
# launched here with it (the stamp), or, in an adopted cluster, started by sealer from files
# equal to what the rootfs holds now (what it sees in its own root, the cert it presents). Any
# other running registry is stopped before the launch.
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
# While the stale marker of a warm standby exists (<rootfs>/registry/.sealer-stale: its replica
# copy has not completed, scripts/pull-data.sh) its registry answers 503 by design
# (distribution's file health check): then 503 counts as up too, and the registry stays out of
# service until the copy completes.
registry_code() {
  local rootfs=$1 port=$2 domain=$3 scheme=http
  [[ -f "$rootfs/certs/$domain.crt" ]] && scheme=https
  curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$scheme://127.0.0.1:$port/v2/" 2>/dev/null || true
}

registry_answers() {
  local rootfs=$1 port=$2 domain=$3 code
  code=$(registry_code "$rootfs" "$port" "$domain")
  [[ "$code" == 200 || "$code" == 401 ]] && return 0
  if [[ "$code" == 503 && -e "$rootfs/registry/.sealer-stale" ]]; then
    info "the registry answers 503: its replica is stale ($rootfs/registry/.sealer-stale), out of service until a copy completes"
    return 0
  fi
  return 1
}

# sha256 of the DER of a PEM certificate file, or of the certificate served on PORT.
cert_digest() { openssl x509 -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1; }
served_cert_digest() {
  openssl s_client -connect "127.0.0.1:$1" -servername "$2" </dev/null 2>/dev/null | cert_digest
}

# Whether the registry listening on PORT serves the rootfs' files as they are now. sealer's
# container (and the lab's) mounts etc/registry_config.yml and etc/registry_htpasswd as files:
# the registry's root shows the files it started with even after the rootfs' were replaced.
# The certs directory is mounted whole, so the cert is judged by what the registry presents.
serves_rootfs_files() {
  local rootfs=$1 port=$2 domain=$3 pid root
  pid=$(listener_pid "$port") || return 1
  [[ -n "$pid" ]] || return 1
  root="/proc/$pid/root"
  cmp -s "$rootfs/etc/registry_config.yml" "$root/etc/docker/registry/config.yml" || return 1
  if [[ -f "$rootfs/etc/registry_htpasswd" ]]; then
    cmp -s "$rootfs/etc/registry_htpasswd" "$root/htpasswd" || return 1
  elif [[ -e "$root/htpasswd" ]]; then
    return 1
  fi
  if [[ -f "$rootfs/certs/$domain.crt" ]]; then
    command -v openssl >/dev/null 2>&1 || return 1
    [[ "$(served_cert_digest "$port" "$domain")" == "$(cert_digest <"$rootfs/certs/$domain.crt")" ]] || return 1
  fi
  info "the running registry (pid $pid) serves the rootfs' config, htpasswd and certificate"
}

main() {
  local rootfs=$1 port=$2 domain=$3 fingerprint=$4
  local stamp="$rootfs/etc/.sealer-registry-material" deadline
  [[ -f "$rootfs/scripts/init-registry.sh" ]] ||
    fatal "$rootfs/scripts/init-registry.sh is missing: is $rootfs a sealer rootfs?"
  # A read-write registry is master0's (or an HA master's): it never gates itself, and a marker
  # left from when this host was a warm standby means nothing to it (with an image store,
  # master0's data step runs after this launch and is not pull-data.sh).
  if [[ -e "$rootfs/registry/.sealer-stale" && "$(registry_config_mode <"$rootfs/etc/registry_config.yml")" == read-write ]]; then
    rm -f "$rootfs/registry/.sealer-stale"
    info "removed the stale marker: this registry serves read-write"
  fi
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$fingerprint" ]]; then
    if registry_answers "$rootfs" "$port" "$domain"; then
      info "registry already runs with this material ($fingerprint) on :$port: skipped init-registry.sh"
      return 0
    fi
    info "registry launched with this material does not answer on :$port: launching it again"
  elif registry_answers "$rootfs" "$port" "$domain" && serves_rootfs_files "$rootfs" "$port" "$domain"; then
    printf '%s\n' "$fingerprint" >"$stamp"
    info "registry already serves this material ($fingerprint) on :$port: kept it, skipped init-registry.sh"
    return 0
  else
    # A running registry keeps the cert and htpasswd it started with; one we did not start
    # (sealer's own in an adopted cluster) may not be the rootfs script's to replace.
    info "registry material is new here ($fingerprint): stopping any running registry"
    stop_registry "$rootfs" "$port"
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
  # distribution runs its first file health check one interval (1 s) after the start: a gated
  # registry answers until then. The step returns once the gate holds.
  if [[ -e "$rootfs/registry/.sealer-stale" ]]; then
    deadline=$((SECONDS + 5))
    until [[ "$(registry_code "$rootfs" "$port" "$domain")" == 503 ]]; do
      ((SECONDS < deadline)) || fatal "the stale marker exists but the registry on :$port does not answer 503 within 5s: is its config the warm standby's?"
      sleep 0.05
    done
    info "stale gate holds: the registry answers 503 until a copy of master0's data completes"
  fi
  printf '%s\n' "$fingerprint" >"$stamp"
  info "registry up on :$port for $domain"
}

main "$@"
