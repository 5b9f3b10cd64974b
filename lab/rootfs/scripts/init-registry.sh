#!/usr/bin/env bash
# Lab stand-in for sealer's rootfs/scripts/init-registry.sh (sealerio/basefs), as strict as the
# real one. Contract: `cd <rootfs>/scripts && bash init-registry.sh [PORT [VOLUME [DOMAIN]]]`
# (defaults 5000, /var/lib/registry, sea.hub).
#
# It reads only what sealer's script reads: its three arguments, <rootfs>/etc/registry_config.yml
# (after the same `sed -i "s/5000/$1/g"`), <rootfs>/certs/<DOMAIN>.crt|.key and
# <rootfs>/etc/registry_htpasswd. sealer runs container `sealer-registry` (registry:2.7.1,
# --net=host); lab hosts have no Docker, so the container is emulated: Debian's docker-registry
# runs in a private mount namespace whose root is a tmpfs with /usr (read-only), a few /dev nodes
# and the container's mounts only:
#   VOLUME                   -> /var/lib/registry
#   <rootfs>/certs           -> /certs
#   etc/registry_config.yml  -> /etc/docker/registry/config.yml (else the image's default config)
#   etc/registry_htpasswd    -> /htpasswd (when it exists)
# and the container's environment: TLS always on (/certs/<DOMAIN>.crt|.key), debug listener on
# 0.0.0.0:5002 with Prometheus metrics, htpasswd auth at /htpasswd when the file exists. Host
# paths do not exist for the registry: a config naming them fails or misbehaves as in the
# container. Like sealer's script it always replaces a running registry; the process outlives
# the caller (setsid) and its pid is kept in /run/sealer-registry/registry.pid for
# stop-registry.sh. It fails, with the registry's log, when the registry does not run and answer.
set -Eeuo pipefail

readonly PROG="init-registry"
RUN_DIR="${SEALER_REGISTRY_RUN_DIR:-/run/sealer-registry}"
LOG_DIR="${SEALER_REGISTRY_LOG_DIR:-/var/log/sealer-registry}"
REGISTRY_BIN="${SEALER_REGISTRY_BIN:-docker-registry}"
# sealer's script checks the container 3 times, 3 s apart; each attempt here polls that long.
CHECK_S="${SEALER_REGISTRY_CHECK_S:-9}"
ATTEMPTS="${SEALER_REGISTRY_ATTEMPTS:-3}"
RETRY_DELAY_S="${SEALER_REGISTRY_RETRY_DELAY_S:-1}"

# registry:2.7.1's own /etc/docker/registry/config.yml, used when the rootfs has no config.
readonly IMAGE_DEFAULT_CONFIG='version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
'

info() { printf '[%s] %s\n' "$PROG" "$*" >&2; }
warn() { printf '[%s] WARN: %s\n' "$PROG" "$*" >&2; }
fatal() {
  printf '[%s] ERROR: %s\n' "$PROG" "$*" >&2
  exit 1
}
trap 'printf "[%s] ERROR: %s:%s: %s failed\n" "$PROG" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" >&2' ERR

# Whether the process runs: a dead child waits as a zombie until its new parent (pid 1, or a
# subreaper) reaps it, which can take seconds.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

registry_pid() {
  local pid
  [[ -f "$RUN_DIR/registry.pid" ]] || return 1
  pid="$(cat "$RUN_DIR/registry.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "docker-registry serve" || return 1
  printf '%s\n' "$pid"
}

stop_running() {
  local pid="$1" i
  info "removing the running registry (pid $pid), as sealer's script removes container sealer-registry"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  warn "registry pid $pid ignored SIGTERM for 5s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  fatal "registry pid $pid survives SIGKILL"
}

# The container: runs inside `unshare --mount --propagation private`, so every mount below is
# private to the registry and disappears with it. Arguments: ROOT VOLUME CERTS_DIR CONFIG
# HTPASSWD|"" BIN ENV...
run_container() {
  set -euo pipefail
  local root=$1 volume=$2 certs_dir=$3 config=$4 htpasswd=$5 bin=$6 dir dev
  shift 6
  mount -t tmpfs -o mode=0755,size=64m sealer-registry "$root"
  mkdir -p "$root/usr" "$root/dev" "$root/tmp" "$root/etc/docker/registry" \
    "$root/var/lib/registry" "$root/certs"
  chmod 1777 "$root/tmp"
  mount --bind /usr "$root/usr"
  mount -o remount,bind,ro "$root/usr"
  for dir in /bin /sbin /lib /lib32 /lib64 /libx32; do
    if [[ -L "$dir" ]]; then
      ln -s "$(readlink "$dir")" "$root$dir"
    elif [[ -d "$dir" ]]; then
      mkdir "$root$dir"
      mount --bind "$dir" "$root$dir"
      mount -o remount,bind,ro "$root$dir"
    fi
  done
  for dev in null zero random urandom; do
    touch "$root/dev/$dev"
    mount --bind "/dev/$dev" "$root/dev/$dev"
  done
  mount --bind "$volume" "$root/var/lib/registry"
  mount --bind "$certs_dir" "$root/certs"
  touch "$root/etc/docker/registry/config.yml"
  mount --bind "$config" "$root/etc/docker/registry/config.yml"
  if [[ -n "$htpasswd" ]]; then
    touch "$root/htpasswd"
    mount --bind "$htpasswd" "$root/htpasswd"
  fi
  cd /
  exec chroot "$root" /usr/bin/env -i "$@" "$bin" serve /etc/docker/registry/config.yml
}

# Starts the container in the background; prints its pid (the registry's, once it has exec'ed).
start_container() {
  local config=$1 volume=$2 certs_dir=$3 htpasswd=$4 domain=$5 bin=$6 log=$7
  local -a env=(
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/$domain.crt"
    "REGISTRY_HTTP_TLS_KEY=/certs/$domain.key"
    "REGISTRY_HTTP_DEBUG_ADDR=0.0.0.0:5002"
    "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED=true"
  )
  if [[ -n "$htpasswd" ]]; then
    env+=("REGISTRY_AUTH=htpasswd" "REGISTRY_AUTH_HTPASSWD_PATH=/htpasswd"
      "REGISTRY_AUTH_HTPASSWD_REALM=Registry Realm")
  fi
  mkdir -p "$RUN_DIR/root"
  # setsid: the registry outlives this script and the SSH session that ran it. Without job
  # control the background child is no process group leader, so setsid does not fork and $! is
  # the pid that ends up exec'ing the registry.
  setsid unshare --mount --propagation private -- \
    bash -c "$(declare -f run_container)"'; run_container "$@"' run_container \
    "$RUN_DIR/root" "$volume" "$certs_dir" "$config" "$htpasswd" "$bin" "${env[@]}" \
    </dev/null >>"$log" 2>&1 &
  printf '%s\n' "$!"
}

answers() {
  # /v2/ over TLS on this host (the container uses the host's network): 200, or 401 with auth.
  local code
  code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "https://127.0.0.1:$1/v2/" || true)"
  [[ "$code" == "200" || "$code" == "401" ]]
}

log_since() {
  # The log written since byte offset $2, at most 40 lines.
  tail -c +"$(($2 + 1))" "$1" | tail -n 40
}

# Polls until the registry runs and answers, for at most CHECK_S seconds. 0: up; 1: it exited;
# 2: it runs but does not answer.
check_registry() {
  local pid=$1 port=$2 deadline
  deadline=$((SECONDS + CHECK_S))
  while ((SECONDS < deadline)); do
    alive "$pid" || return 1
    if answers "$port" && registry_pid >/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  return 2
}

main() {
  local port="${1-5000}" volume="${2-/var/lib/registry}" domain="${3-sea.hub}"
  local here rootfs config htpasswd certs_dir bin log pid offset attempt rc=1
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  rootfs="$(dirname "$here")"
  config="$rootfs/etc/registry_config.yml"
  htpasswd="$rootfs/etc/registry_htpasswd"
  certs_dir="$rootfs/certs"
  [[ "$volume" == /* ]] || fatal "VOLUME must be an absolute path (a bind mount source), got '$volume'"
  bin="$(command -v "$REGISTRY_BIN")" || fatal "$REGISTRY_BIN not found in PATH"
  [[ "$bin" == /usr/* ]] || fatal "$bin is outside /usr: the registry's root only has /usr"
  command -v curl >/dev/null || fatal "curl not found in PATH"
  info "rootfs $rootfs, port $port, volume $volume, domain $domain"

  mkdir -p "$volume" "$certs_dir" "$RUN_DIR" "$LOG_DIR"
  if compgen -G "$rootfs/images/*" >/dev/null; then
    info "no container runtime in the lab: $rootfs/images/ is not loaded"
  fi
  if pid="$(registry_pid)"; then
    stop_running "$pid"
  fi
  rm -f "$RUN_DIR/registry.pid"

  if [[ -f "$config" ]]; then
    # What sealer's script does to the config before mounting it (with $1, even when empty).
    sed -i "s/5000/${1-}/g" "$config"
    info "config $config"
  else
    printf '%s' "$IMAGE_DEFAULT_CONFIG" >"$RUN_DIR/image-config.yml"
    config="$RUN_DIR/image-config.yml"
    info "no $rootfs/etc/registry_config.yml: the image's default config"
  fi
  if [[ -f "$htpasswd" ]]; then
    info "htpasswd auth with $htpasswd"
  else
    htpasswd=""
  fi

  log="$LOG_DIR/registry.log"
  touch "$log"
  for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
    offset="$(stat -c %s "$log")"
    printf -- '--- %s start %s/%s port=%s volume=%s domain=%s\n' "$(date -Is)" "$attempt" \
      "$ATTEMPTS" "$port" "$volume" "$domain" >>"$log"
    pid="$(start_container "$config" "$volume" "$certs_dir" "$htpasswd" "$domain" "$bin" "$log")"
    printf '%s\n' "$pid" >"$RUN_DIR/registry.pid"
    rc=0
    check_registry "$pid" "$port" || rc=$?
    if ((rc == 0)); then
      info "registry pid $pid runs and answers on :$port"
      return 0
    fi
    if ((rc == 2)); then
      warn "registry pid $pid did not answer https://127.0.0.1:$port/v2/ within ${CHECK_S}s"
      stop_running "$pid"
    else
      warn "registry exited during start (attempt $attempt/$ATTEMPTS)"
    fi
    rm -f "$RUN_DIR/registry.pid"
    ((attempt == ATTEMPTS)) || sleep "$RETRY_DELAY_S"
  done
  fatal "the registry does not run after $ATTEMPTS attempts; last log lines of $log:
$(log_since "$log" "$offset")"
}

main "$@"
