#!/usr/bin/env bash
# Lab stand-in for sealer's rootfs/scripts/init-registry.sh: same contract
# (`cd <rootfs>/scripts && bash init-registry.sh PORT VOLUME DOMAIN`), but it runs the distribution
# registry binary (Debian `docker-registry`) instead of a container, because lab hosts have no Docker.
#
# Config: <rootfs>/etc/registry.yml, else <rootfs>/etc/registry_config.yml (sealer basefs name).
# TLS: <rootfs>/certs/<DOMAIN>.crt|.key when the config has no tls section of its own.
# Auth: <rootfs>/etc/registry_htpasswd when the config has no auth section of its own.
# Idempotent: a registry already running with the same inputs is left alone; otherwise restarted.
set -Eeuo pipefail

readonly PROG="init-registry"
RUN_DIR="${SEALER_REGISTRY_RUN_DIR:-/run/sealer-registry}"
LOG_DIR="${SEALER_REGISTRY_LOG_DIR:-/var/log/sealer-registry}"
REGISTRY_BIN="${SEALER_REGISTRY_BIN:-docker-registry}"
START_TIMEOUT_S="${SEALER_REGISTRY_START_TIMEOUT:-15}"

info() { printf '[%s] %s\n' "$PROG" "$*" >&2; }
warn() { printf '[%s] WARN: %s\n' "$PROG" "$*" >&2; }
fatal() {
  printf '[%s] ERROR: %s\n' "$PROG" "$*" >&2
  exit 1
}
trap 'printf "[%s] ERROR: %s:%s: %s failed\n" "$PROG" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" >&2' ERR

rootfs_dir() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  dirname "$here"
}

find_config() {
  local rootfs="$1" name
  for name in registry.yml registry_config.yml; do
    if [[ -f "$rootfs/etc/$name" ]]; then
      printf '%s\n' "$rootfs/etc/$name"
      return 0
    fi
  done
  fatal "no registry config: neither $rootfs/etc/registry.yml nor $rootfs/etc/registry_config.yml"
}

file_hash() {
  if [[ -f "$1" ]]; then
    sha256sum "$1" | cut -d' ' -f1
  else
    printf 'absent\n'
  fi
}

registry_pid() {
  local pid
  [[ -f "$RUN_DIR/registry.pid" ]] || return 1
  pid="$(cat "$RUN_DIR/registry.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$REGISTRY_BIN serve" || return 1
  printf '%s\n' "$pid"
}

probe() {
  # Prints the HTTP status of /v2/ (000 when nothing answers); 200 and 401 both mean "up".
  local port="$1" scheme code
  for scheme in https http; do
    code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$scheme://127.0.0.1:$port/v2/" || true)"
    if [[ "$code" == "200" || "$code" == "401" ]]; then
      printf '%s\n' "$code"
      return 0
    fi
  done
  printf '000\n'
  return 1
}

stop_running() {
  local pid="$1" i
  info "stopping registry pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    [[ -d "/proc/$pid" ]] || return 0
    sleep 0.1
  done
  warn "registry pid $pid ignored SIGTERM for 5s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

start_registry() {
  local config="$1" port="$2" volume="$3" rootfs="$4" domain="$5" log="$6"
  local -a env_args=("REGISTRY_HTTP_ADDR=:$port" "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$volume")
  local crt="$rootfs/certs/$domain.crt" key="$rootfs/certs/$domain.key"
  local htpasswd="$rootfs/etc/registry_htpasswd"

  if grep -Eq '^[[:space:]]+tls:' "$config"; then
    info "TLS from $config"
  elif [[ -f "$crt" && -f "$key" ]]; then
    info "TLS with $crt"
    env_args+=("REGISTRY_HTTP_TLS_CERTIFICATE=$crt" "REGISTRY_HTTP_TLS_KEY=$key")
  else
    warn "no TLS: $crt / $key missing, serving plain http"
  fi
  if grep -Eq '^auth:' "$config"; then
    info "auth from $config"
  elif [[ -f "$htpasswd" ]]; then
    info "htpasswd auth with $htpasswd"
    env_args+=("REGISTRY_AUTH=htpasswd" "REGISTRY_AUTH_HTPASSWD_REALM=Registry Realm"
      "REGISTRY_AUTH_HTPASSWD_PATH=$htpasswd")
  else
    warn "no auth configured: anonymous access"
  fi

  mkdir -p "$volume" "$LOG_DIR"
  printf -- '--- %s start port=%s volume=%s config=%s\n' "$(date -Is)" "$port" "$volume" "$config" >>"$log"
  # setsid: the registry must outlive this script and the SSH session that ran it.
  env "${env_args[@]}" setsid "$REGISTRY_BIN" serve "$config" </dev/null >>"$log" 2>&1 &
  printf '%s\n' "$!" >"$RUN_DIR/registry.pid"
}

log_since() {
  # The log written by this start attempt (from byte offset $2 on), at most 40 lines.
  tail -c +"$(($2 + 1))" "$1" | head -n 40
}

wait_until_up() {
  local pid="$1" port="$2" log="$3" offset="$4" deadline code
  deadline=$((SECONDS + START_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if ! [[ -d "/proc/$pid" ]]; then
      fatal "registry exited during start; last log lines of $log:
$(log_since "$log" "$offset")"
    fi
    if code="$(probe "$port")"; then
      info "registry pid $pid answers on :$port (/v2/ -> $code)"
      return 0
    fi
    sleep 0.1
  done
  fatal "registry pid $pid did not answer on 127.0.0.1:$port within ${START_TIMEOUT_S}s; last log lines of $log:
$(log_since "$log" "$offset")"
}

main() {
  local port="${1:-5000}" volume="${2:-/var/lib/registry}" domain="${3:-sea.hub}"
  local rootfs config state log pid offset
  [[ "$port" =~ ^[0-9]+$ ]] || fatal "PORT must be a number, got '$port'"
  command -v "$REGISTRY_BIN" >/dev/null || fatal "$REGISTRY_BIN not found in PATH"
  command -v curl >/dev/null || fatal "curl not found in PATH"

  rootfs="$(rootfs_dir)"
  config="$(find_config "$rootfs")"
  info "rootfs $rootfs, config $config, port $port, volume $volume, domain $domain"
  log="$LOG_DIR/registry.log"
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  touch "$log"
  state="port=$port volume=$volume domain=$domain config=$config"
  state+=" config_sha=$(file_hash "$config")"
  state+=" crt_sha=$(file_hash "$rootfs/certs/$domain.crt") key_sha=$(file_hash "$rootfs/certs/$domain.key")"
  state+=" htpasswd_sha=$(file_hash "$rootfs/etc/registry_htpasswd")"

  if pid="$(registry_pid)"; then
    if [[ "$(cat "$RUN_DIR/registry.state" 2>/dev/null || true)" == "$state" ]] && probe "$port" >/dev/null; then
      info "registry pid $pid already running with the same config, port and volume: nothing to do"
      return 0
    fi
    info "registry pid $pid runs with other inputs (or is unhealthy): restarting"
    stop_running "$pid"
  fi
  rm -f "$RUN_DIR/registry.pid" "$RUN_DIR/registry.state"

  offset="$(stat -c %s "$log")"
  start_registry "$config" "$port" "$volume" "$rootfs" "$domain" "$log"
  pid="$(cat "$RUN_DIR/registry.pid")"
  wait_until_up "$pid" "$port" "$log" "$offset"
  printf '%s\n' "$state" >"$RUN_DIR/registry.state"
}

main "$@"
