# shellcheck shell=bash
# The registry's own helpers, for the scripts that start or stop it (common.sh comes first).

# How long a stop waits for the registry to drain before killing it: above its draintimeout (10 s).
readonly REGISTRY_STOP_WAIT_S=15

# Closing a listening socket resets every connection still in its accept queue: the kernel had
# completed their handshake, so the client (a node's HAProxy, TLS passed through) counts the
# connect as done, does not redispatch it, and dockerd fails the request with EOF (a docker pull
# cut 1 of 17 times during 6 restarts of the standby in use, tests/lab/test_entry_handover.py).
# So before the stop, new connections to the port are refused (a TCP reset answers their SYN:
# HAProxy redispatches a refused connect at once, `observe layer4` marks the server down) and
# the registry accepts what its queue holds; then it drains what it accepted (http.draintimeout).
# The refusal is an element with a timeout in an nft set of a table of our own: it ends by itself
# after REGISTRY_REFUSE_S, also when this script is killed between the two; the table goes once
# the listener is closed. Hooked on input: sealer's registry runs with --net=host
# (init-registry.sh@v0.11.0), so its connections are delivered locally. Without nft (hosts with
# iptables only) the stop is what it was: such a connection may still be reset.
readonly REGISTRY_DRAIN_TABLE=sealer_registry_drain
readonly REGISTRY_REFUSE_S=$((REGISTRY_STOP_WAIT_S + 15))
readonly REGISTRY_QUEUE_WAIT_S=2

# Connections queued on the listener of PORT, not yet accepted (ss: a listener's Recv-Q).
listener_queue() {
  ss -Hltn "sport = :$1" 2>/dev/null | awk '{ n += $2 } END { print n + 0 }'
}

refuse_new_connections() {
  local port=$1 deadline
  if ! command -v nft >/dev/null 2>&1; then
    info "nft not found: a connection queued on :$port when the registry stops may be reset"
    return 0
  fi
  # One transaction: the table made anew (an earlier, interrupted stop may have left it). A host
  # whose kernel or nft cannot take it (no nf_tables) stops as without nft.
  if ! nft -f - <<NFT; then
add table inet $REGISTRY_DRAIN_TABLE
delete table inet $REGISTRY_DRAIN_TABLE
table inet $REGISTRY_DRAIN_TABLE {
  set ports {
    type inet_service
    flags timeout
    elements = { $port timeout ${REGISTRY_REFUSE_S}s }
  }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    tcp dport @ports tcp flags & (syn | ack) == syn reject with tcp reset
  }
}
NFT
    warn "nft could not add table inet $REGISTRY_DRAIN_TABLE: a connection queued on :$port when the registry stops may be reset"
    return 0
  fi
  deadline=$((SECONDS + REGISTRY_QUEUE_WAIT_S))
  while (($(listener_queue "$port") > 0)) && ((SECONDS < deadline)); do
    sleep 0.05
  done
  info "new connections to :$port refused while the registry stops (queue: $(listener_queue "$port"))"
}

accept_new_connections() {
  if command -v nft >/dev/null 2>&1 && nft list table inet "$REGISTRY_DRAIN_TABLE" >/dev/null 2>&1; then
    nft delete table inet "$REGISTRY_DRAIN_TABLE" || warn "nft could not delete table inet $REGISTRY_DRAIN_TABLE (its element ends by itself)"
  fi
}

# Stops the registry of a rootfs, whichever way it was started: the rootfs' own stop script (the
# lab and our images), else sealer's docker or nerdctl container `sealer-registry`. With PORT,
# and a registry listening on it, new connections are refused first (above).
stop_registry() {
  local rootfs=$1 port=${2:-}
  if [[ -n "$port" && -n "$(listener_pid "$port" || true)" ]]; then
    refuse_new_connections "$port"
  fi
  stop_registry_now "$rootfs"
  accept_new_connections
}

stop_registry_now() {
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
