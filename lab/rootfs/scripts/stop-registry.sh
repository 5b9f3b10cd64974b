#!/usr/bin/env bash
# Stops the registry that init-registry.sh started on this host (pidfile under /run). Idempotent.
set -Eeuo pipefail

readonly PROG="stop-registry"
RUN_DIR="${SEALER_REGISTRY_RUN_DIR:-/run/sealer-registry}"
REGISTRY_BIN="${SEALER_REGISTRY_BIN:-docker-registry}"

info() { printf '[%s] %s\n' "$PROG" "$*" >&2; }
warn() { printf '[%s] WARN: %s\n' "$PROG" "$*" >&2; }
fatal() {
  printf '[%s] ERROR: %s\n' "$PROG" "$*" >&2
  exit 1
}
trap 'printf "[%s] ERROR: %s:%s: %s failed\n" "$PROG" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" >&2' ERR

# Whether the process runs: a dead child waits as a zombie until its new parent reaps it.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

main() {
  local pid i
  if [[ ! -f "$RUN_DIR/registry.pid" ]]; then
    info "no pidfile $RUN_DIR/registry.pid: registry not running"
    return 0
  fi
  pid="$(cat "$RUN_DIR/registry.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || fatal "bad pidfile content '$pid'"
  if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$REGISTRY_BIN serve"; then
    info "stopping registry pid $pid"
    # A registry configured with http.draintimeout (the program's configs: 10 s) finishes the
    # requests it serves first, as in a `docker stop` of sealer's container.
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      warn "pid $pid did not end within 15s of SIGTERM, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    info "pid $pid is not a running registry: only removing the stale pidfile"
  fi
  rm -f "$RUN_DIR/registry.pid" "$RUN_DIR/registry.state"
}

main "$@"
