# shellcheck shell=bash
# The registry's own helpers, for the scripts that start or stop it (common.sh comes first).

# How long a stop waits for the registry to drain before killing it: above its draintimeout (10 s).
readonly REGISTRY_STOP_WAIT_S=15

# Stops the registry of a rootfs, whichever way it was started: the rootfs' own stop script (the
# lab and our images), else sealer's docker or nerdctl container `sealer-registry`.
stop_registry() {
  local rootfs=$1 tool
  if [[ -f "$rootfs/scripts/stop-registry.sh" ]]; then
    (cd "$rootfs/scripts" && bash stop-registry.sh)
    return 0
  fi
  for tool in docker nerdctl; do
    if command -v "$tool" >/dev/null 2>&1 && "$tool" inspect sealer-registry >/dev/null 2>&1; then
      # SIGTERM first: the registry drains (http.draintimeout, material/registry_config.py) so
      # the transfers nodes have under way finish; `rm -f` alone would SIGKILL it mid-request.
      "$tool" stop -t "$REGISTRY_STOP_WAIT_S" sealer-registry >/dev/null || true
      "$tool" rm -f sealer-registry >/dev/null
      info "stopped container sealer-registry ($tool)"
      return 0
    fi
  done
  info "no registry running"
}

# The pid of the process listening on TCP PORT on this host, if any.
listener_pid() {
  command -v ss >/dev/null 2>&1 || return 1
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2
}

# read-only when the registry config on stdin turns on distribution's read-only mode
# (storage.maintenance.readonly.enabled: true, block or flow style), else read-write.
registry_config_mode() {
  awk '
    /^[[:space:]]*(#|$)/ { next }
    {
      match($0, /^ */); ind = RLENGTH; line = substr($0, ind + 1)
      while (depth > 0 && ind <= at[depth]) depth--
      key = line; sub(/:.*/, "", key)
      value = ""; if (index(line, ":")) { value = line; sub(/^[^:]*:[ ]*/, "", value) }
      at[++depth] = ind; keys[depth] = key
      path = keys[1]; for (i = 2; i <= depth; i++) path = path "." keys[i]
      if (path == "storage.maintenance.readonly.enabled" && value ~ /^true/) ro = 1
      if (path == "storage.maintenance.readonly" && value ~ /enabled: *true/) ro = 1
      if (path == "storage.maintenance" && value ~ /readonly: *\{ *enabled: *true/) ro = 1
    }
    END { print (ro ? "read-only" : "read-write") }
  '
}

# How the registry listening on PORT runs: read-only or read-write, from the config it started
# with (what its root shows at /etc/docker/registry/config.yml, in sealer's container as in the
# lab's) or, when that cannot be read, the rootfs' etc/registry_config.yml; the environment
# variable REGISTRY_STORAGE_MAINTENANCE_READONLY overrides both, as in distribution.
registry_mode() {
  local rootfs=$1 port=$2 pid="" config env
  pid=$(listener_pid "$port" || true)
  config="$rootfs/etc/registry_config.yml"
  if [[ -n "$pid" && -r "/proc/$pid/root/etc/docker/registry/config.yml" ]]; then
    config="/proc/$pid/root/etc/docker/registry/config.yml"
  fi
  if [[ -n "$pid" && -r "/proc/$pid/environ" ]]; then
    env=$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^REGISTRY_STORAGE_MAINTENANCE_READONLY=//p')
    if [[ -n "$env" ]]; then
      if grep -Eq 'enabled: *true' <<<"$env"; then echo read-only; else echo read-write; fi
      return 0
    fi
  fi
  if [[ -r "$config" ]]; then
    registry_config_mode <"$config"
  else
    echo read-write
  fi
}
