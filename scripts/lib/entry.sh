# shellcheck shell=bash
# The node-local entry point to the registry (registry.local_registry.node_entry, issue 21;
# common.sh comes first): HAProxy on ADDRESS:PORT, an address of the node's own `lo`, forwarding
# TCP (TLS passes through untouched, the client verifies the registry's certificate itself) to
# master0, or to the first healthy warm standby when master0 fails its health check. HAProxy,
# not a proxy of our own: health checks, retries and a stats page. The host's own (a distribution
# package) or, where there is none (air-gapped sealer hosts), the program's bundle: Debian's
# package with its libraries and loader (python -m cli haproxy-bundle), copied to the node by the
# program and unpacked here under /opt/sealer-registry/haproxy/<version>.
#
# Why these settings (docs/how-it-works.md, "The entry point on nodes"):
# - `timeout connect 300ms`, `retries 3`, `option redispatch 1`: a connect to a dead master0 (packets
#   dropped, or its address gone) gives up after 0.3 s and the retry goes to another server.
#   The same value is HAProxy's wait before retrying a refused connect while only backups serve
#   (min(timeout connect, 1 s)): at 1 s, every restart of the standby in use (the recovery
#   promotes it) cost one request 1.0 s; at 300 ms, 0.3 s (tests/lab/test_entry_handover.py).
#   A LAN connect completes in well under 10 ms, in the kernel, whatever the host's CPU load;
#   a lost SYN (1 s retransmit) fails the connect either way;
# - `observe layer4 error-limit 1 on-error mark-down`: that first failed connect marks master0 down
#   at once, so the retry and every later connection go to a standby without waiting for the
#   health check (`inter 1s fall 2`) to notice;
# - the health check is the registry's own TLS handshake, verified against the CA this script
#   installed and the domain's name, then `GET /v2/`: 200 or 401 (auth required) is up;
# - `option srvtcpka` with short keep-alive probes ends an idle connection to a master0 that died
#   under it within seconds, and `tcp-ut 2s` (TCP_USER_TIMEOUT, on each server line) one whose request or upload bytes
#   master0 never acknowledged (keep-alive probes are not sent while data is unacknowledged: a
#   request written just before the kill waited out `timeout server`, 30 s+ in the lab test); the
#   client then retries on a fresh connection, which goes to a standby; `on-marked-down
#   shutdown-sessions` is not used: it cut the very connections HAProxy was retrying on a backup.
# Pushes: only master0 takes them; standbys are read-only registries, so a push that reaches a
# standby while master0 is down fails with 405 and nothing is written there.

readonly ENTRY_CONFIG=/etc/sealer/registry-entry.cfg
readonly ENTRY_PIDFILE=/run/sealer-registry-entry.pid
# HAProxy's admin socket (root only): a reload takes the listening socket over from the running
# process through it (`expose-fd listeners` here, `-x` on the new process), so no connection
# queued on the old listener is reset while the new process starts.
readonly ENTRY_SOCKET=/run/sealer-registry-entry.sock
# What the running HAProxy took: "<sha256 of ENTRY_CONFIG> <its pid>", written once a start or
# reload with that config succeeded (entry_applied).
readonly ENTRY_APPLIED=/run/sealer-registry-entry.applied
readonly ENTRY_UNIT=sealer-registry-entry.service
readonly ENTRY_UNIT_FILE=/etc/systemd/system/sealer-registry-entry.service
readonly ENTRY_MIN_HAPROXY=(2 2) # srvtcpka-idle/-intvl/-cnt and http-check send: HAProxy 2.2

readonly ENTRY_BUNDLE_ROOT=/opt/sealer-registry/haproxy
# Seconds between health checks of each server (configure-node.sh --entry-check-interval).
ENTRY_CHECK_INTERVAL=1

# The "major.minor" HAProxy version BIN reports, or fails.
entry_haproxy_version() {
  local bin=$1 version
  version=$("$bin" -v 2>/dev/null | sed -n 's/^HA-\{0,1\}Proxy version \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
  [[ -n "$version" ]] || return 1
  printf '%s\n' "$version"
}

entry_version_ok() {
  local version=$1 major minor
  major=${version%%.*} minor=${version#*.}
  ((major > ENTRY_MIN_HAPROXY[0] || (major == ENTRY_MIN_HAPROXY[0] && minor >= ENTRY_MIN_HAPROXY[1])))
}

# The host's own haproxy when it is installed and >= 2.2 (prints its path); else fails, printing
# why on stdout (the caller decides whether that is fatal).
entry_system_haproxy() {
  local bin version
  if ! bin=$(command -v haproxy); then
    printf 'haproxy is not installed\n'
    return 1
  fi
  if ! version=$(entry_haproxy_version "$bin"); then
    printf "cannot read the version of %s ('%s -v')\n" "$bin" "$bin"
    return 1
  fi
  if ! entry_version_ok "$version"; then
    printf '%s is %s\n' "$bin" "$version"
    return 1
  fi
  printf '%s\n' "$bin"
}

# The bundle's version directory (ENTRY_BUNDLE_ROOT/<debian version>) from its tarball's name,
# haproxy-<debian version>-amd64.tar.gz (python -m cli haproxy-bundle).
entry_bundle_dir() {
  local name
  name=$(basename "$1")
  [[ "$name" =~ ^haproxy-([0-9][A-Za-z0-9.+~-]*)-amd64\.tar\.gz$ ]] ||
    fatal "the HAProxy bundle's name is not haproxy-<version>-amd64.tar.gz: '$name'"
  printf '%s/%s\n' "$ENTRY_BUNDLE_ROOT" "${BASH_REMATCH[1]}"
}

# Whether DIR holds the bundle whose tarball had SHA256, every file as its SHA256SUMS says.
entry_bundle_intact() {
  local dir=$1 sha=$2
  [[ -f "$dir/.tarball-sha256" && "$(cat "$dir/.tarball-sha256")" == "$sha" ]] || return 1
  (cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1)
}

# Unpacks the bundle TARBALL (sha256 SHA256, as the program computed it on the operator's
# machine) into ENTRY_BUNDLE_ROOT/<version> unless that directory already holds it intact; the
# tarball's sha256 and then every file's are checked before the directory is renamed into place
# (a failed or interrupted unpack leaves no half bundle there). Prints the wrapper's path.
entry_bundle_install() {
  local tarball=$1 sha=$2 dir actual stage old=""
  dir=$(entry_bundle_dir "$tarball")
  if entry_bundle_intact "$dir" "$sha"; then
    info "unchanged: the HAProxy bundle in $dir"
    printf '%s\n' "$dir/bin/haproxy-entry"
    return 0
  fi
  [[ "$(uname -m)" == x86_64 ]] || fatal "the HAProxy bundle is built for x86_64, this host is $(uname -m)"
  [[ -f "$tarball" ]] || fatal "the HAProxy bundle $tarball is not on this host (the program copies it" \
    "there before this step; if it was removed since: pulumi up --replace on its copy step)"
  mkdir -p "$ENTRY_BUNDLE_ROOT"
  # Checked and unpacked from a copy only root can write: the staged file is the login user's.
  stage=$(mktemp -d "$ENTRY_BUNDLE_ROOT/.unpack.XXXXXX")
  cp "$tarball" "$stage/.tarball"
  actual=$(sha256sum "$stage/.tarball" | awk '{ print $1 }')
  if [[ "$actual" != "$sha" ]]; then
    rm -rf "$stage"
    fatal "the HAProxy bundle $tarball has sha256 $actual, the program sent $sha: a different or" \
      "damaged file; not used"
  fi
  if ! tar -xzf "$stage/.tarball" -C "$stage" --no-same-owner ||
    ! (cd "$stage" && sha256sum --quiet --strict -c SHA256SUMS >&2); then
    rm -rf "$stage"
    fatal "the HAProxy bundle $tarball does not unpack with the sha256 of every file its SHA256SUMS lists"
  fi
  rm -f "$stage/.tarball"
  printf '%s\n' "$sha" >"$stage/.tarball-sha256"
  chmod 0755 "$stage"
  if [[ -e "$dir" ]]; then
    old="$ENTRY_BUNDLE_ROOT/.old.$$"
    mv "$dir" "$old"
  fi
  mv "$stage" "$dir"
  [[ -z "$old" ]] || rm -rf "$old"
  info "installed the HAProxy bundle $(basename "$tarball") in $dir"
  printf '%s\n' "$dir/bin/haproxy-entry"
}

# The HAProxy the entry point runs, by MODE (registry.local_registry.node_entry.haproxy):
# system, the host's (>= 2.2) or a refusal; bundle, the bundle TARBALL (SHA256); auto, the
# host's when it has a good one, else the bundle when the program sent one. Prints its path.
entry_haproxy() {
  local mode=${1:-auto} tarball=${2:-} sha=${3:-} bin why need version
  need="node_entry needs HAProxy >= ${ENTRY_MIN_HAPROXY[0]}.${ENTRY_MIN_HAPROXY[1]}"
  case $mode in
    system | auto) ;;
    bundle)
      [[ -n "$tarball" ]] || fatal "node_entry.haproxy: bundle and no bundle sent (--haproxy-bundle)"
      bin=$(entry_bundle_install "$tarball" "$sha") || exit 1
      ;;
    *) fatal "unknown node_entry.haproxy mode '$mode' (auto, system or bundle)" ;;
  esac
  if [[ "$mode" != bundle ]]; then
    if bin=$(entry_system_haproxy); then
      printf '%s\n' "$bin"
      return 0
    fi
    why=$bin
    if [[ "$mode" == system ]]; then
      fatal "$need on this host and $why (node_entry.haproxy: system uses the host's only): install" \
        "the distribution's package (Debian/Ubuntu: apt-get install haproxy; RHEL family: dnf install" \
        "haproxy; offline: the .deb/.rpm from the installation media), or set node_entry.haproxy:" \
        "auto or bundle to ship the program's bundle"
    fi
    [[ -n "$tarball" ]] || fatal "$need on this host and $why, and the program sent no bundle" \
      "(--haproxy-bundle): install the distribution's haproxy package or build the bundle" \
      "(make haproxy-bundle)"
    info "the host's HAProxy cannot serve ($why): using the program's bundle"
    bin=$(entry_bundle_install "$tarball" "$sha") || exit 1
  fi
  version=$(entry_haproxy_version "$bin") || fatal "cannot read the version of $bin ('$bin -v')"
  entry_version_ok "$version" || fatal "$need, the bundle's $bin is $version"
  printf '%s\n' "$bin"
}

# ADDRESS/32 on the loopback device, added when absent (it is the node's own: no other host
# needs to reach it, and nothing on the network answers for it).
entry_address() {
  local address=$1
  if ip -o -4 addr show dev lo | awk '{ print $4 }' | grep -qxF "$address/32"; then
    info "unchanged: $address/32 on lo"
    return 0
  fi
  ip addr add "$address/32" dev lo
  info "added $address/32 on lo"
}

# With a check interval above 1 s (large clusters): a server changing state is checked every
# second (HAProxy's fastinter): one that failed a check is DOWN (or back UP) within about 1 s, and
# one a reload just added, which starts UP in transition ("UP 1/2"), settles as fast. A server
# that is DOWN stays at the interval (downinter defaults to inter): at 500 nodes a standby that
# is down or slow to answer gets 50 checks a second, not 500 TLS handshakes that keep a loaded
# one from ever answering in time (a 3 + 500 deploy never saw its standbys UP, session 14); it
# is UP again within the interval + 1 s of answering. Nothing at the default (the config stays
# byte for byte what it was).
entry_fast_checks() {
  if ((ENTRY_CHECK_INTERVAL > 1)); then printf ' fastinter 1s'; fi
}

# The HAProxy config: frontend on ADDRESS:PORT, master0 first, each warm standby as a backup,
# the stats page (CSV at /;csv) on 127.0.0.1:STATS_PORT. Same arguments on the same host, same
# bytes.
entry_render() {
  local domain=$1 port=$2 address=$3 stats_port=$4 ca=$5 master0=$6 mirror
  shift 6
  cat <<CFG
# Written by configure-node.sh (registry.local_registry.node_entry): the node-local entry point
# to $domain:$port. The next \`pulumi up\` overwrites any edit.
global
    maxconn 4096
    stats socket $ENTRY_SOCKET mode 600 level admin expose-fd listeners
CFG
  # The distribution's package creates the user: HAProxy binds its listeners and reads the CA
  # file as root, then needs root no more.
  if getent passwd haproxy >/dev/null && getent group haproxy >/dev/null; then
    printf '    user haproxy\n    group haproxy\n'
  fi
  cat <<CFG

defaults
    mode tcp
    timeout connect 300ms
    timeout client 10m
    timeout server 10m
    timeout check 2s
    retries 3
    option redispatch 1
    option clitcpka
    clitcpka-idle 30s
    clitcpka-intvl 10s
    clitcpka-cnt 3
    option srvtcpka
    srvtcpka-idle 1s
    srvtcpka-intvl 1s
    srvtcpka-cnt 2

frontend registry-entry
    bind $address:$port
    default_backend registry

backend registry
    option httpchk
    http-check send meth GET uri /v2/ ver HTTP/1.1 hdr Host $domain:$port
    http-check expect rstatus ^(200|401)\$
    default-server check check-ssl check-sni $domain verify required ca-file $ca verifyhost $domain inter ${ENTRY_CHECK_INTERVAL}s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down$(entry_fast_checks)
    server master0-$master0 $master0:$port tcp-ut 2s
CFG
  # tcp-ut on each server line: HAProxy 2.6.12 accepts it on default-server but does not pass it
  # on to the servers (strace: no TCP_USER_TIMEOUT on their sockets).
  for mirror in "$@"; do
    printf '    server standby-%s %s:%s tcp-ut 2s backup\n' "$mirror" "$mirror" "$port"
  done
  cat <<CFG

listen stats
    bind 127.0.0.1:$stats_port
    mode http
    stats enable
    stats uri /
    stats show-legends
    stats refresh 5s
CFG
}

# The pid of the entry point's HAProxy started from ENTRY_CONFIG (pid file, process alive and
# running that config), or fails.
entry_pid() {
  local pid
  [[ -r "$ENTRY_PIDFILE" ]] || return 1
  pid=$(head -n 1 "$ENTRY_PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-f $ENTRY_CONFIG" || return 1
  printf '%s\n' "$pid"
}

entry_with_systemd() {
  [[ -d /run/systemd/system && "$(cat /proc/1/comm 2>/dev/null)" == systemd ]]
}

entry_render_unit() {
  local haproxy=$1 address=$2 domain=$3 port=$4 ip_bin
  ip_bin=$(command -v ip)
  cat <<UNIT
[Unit]
Description=Node-local entry point to the sealer registry $domain:$port (HAProxy)
After=network.target

[Service]
Type=notify
# The entry address lives on lo: a reboot forgets it.
ExecStartPre=-$ip_bin addr add $address/32 dev lo
ExecStartPre=$haproxy -c -q -f $ENTRY_CONFIG
ExecStart=$haproxy -Ws -f $ENTRY_CONFIG -p $ENTRY_PIDFILE
ExecReload=$haproxy -c -q -f $ENTRY_CONFIG
# Master-worker mode: on USR2 the master re-executes itself with -x sockpair@N (seen with 2.6)
# and the new worker takes the listeners over; no connection queued on them is reset.
ExecReload=/bin/kill -USR2 \$MAINPID
KillMode=mixed
Restart=always
RestartSec=1s

[Install]
WantedBy=multi-user.target
UNIT
}

# The PIDs of the unit's HAProxy workers: the master's (MainPID) children, one per line.
entry_unit_workers() {
  local main=$1
  pgrep -P "$main" | sort || true
}

# `systemctl reload` of the unit, and whether it took: ExecReload only signals the master
# (USR2), so systemctl succeeds even when the new worker cannot start (a port taken: the master
# logs it and keeps the old worker, which serves the old config). A new worker under the same
# master within 5 s is the proof; without it the caller puts the old config back.
entry_systemd_reload() {
  local main before now pid
  main=$(systemctl show -p MainPID --value "$ENTRY_UNIT")
  [[ "$main" =~ ^[1-9][0-9]*$ ]] || {
    warn "$ENTRY_UNIT has no main process to reload"
    return 1
  }
  before=$(entry_unit_workers "$main")
  systemctl reload "$ENTRY_UNIT" || return 1
  for _ in $(seq 50); do
    now=$(entry_unit_workers "$main")
    for pid in $now; do
      grep -qxF "$pid" <<<"$before" || return 0
    done
    sleep 0.1
  done
  warn "HAProxy kept its old worker after the reload: the new config did not start (journalctl -u $ENTRY_UNIT)"
  return 1
}

# Starts or reloads HAProxy as a daemon (-D) with ENTRY_CONFIG. A reload is seamless: the new
# process takes the listening socket from the old one (-x ENTRY_SOCKET) instead of binding its
# own, then the old one (-sf) stops accepting and finishes its transfers. Without -x the two
# processes each had a listener for a moment and a connection queued on the old one when it
# closed was reset: a docker pull failed with EOF in 1 reload of 8 (tests/lab/
# test_entry_handover.py). A process started before the socket was configured has none: that
# one reload binds anew. Fails when the new process did not start (the old one keeps serving).
entry_start_daemon() {
  local haproxy=$1 old=${2:-} out takeover=()
  out=$(mktemp)
  if [[ -n "$old" ]]; then
    [[ -S "$ENTRY_SOCKET" ]] && takeover=(-x "$ENTRY_SOCKET")
    if ! "$haproxy" -D -p "$ENTRY_PIDFILE" -f "$ENTRY_CONFIG" "${takeover[@]}" -sf "$old" </dev/null >"$out" 2>&1; then
      sed 's/^/haproxy: /' "$out" >&2
      rm -f "$out"
      printf '%s\n' "$old" >"$ENTRY_PIDFILE"
      return 1
    fi
  elif ! "$haproxy" -D -p "$ENTRY_PIDFILE" -f "$ENTRY_CONFIG" </dev/null >"$out" 2>&1; then
    sed 's/^/haproxy: /' "$out" >&2
    rm -f "$out"
    return 1
  fi
  rm -f "$out"
  entry_pid >/dev/null || {
    warn "haproxy started but $ENTRY_PIDFILE names no process running $ENTRY_CONFIG"
    return 1
  }
}

# (Re)starts the entry point after ENTRY_CONFIG changed (CHANGED=1), or starts it when it is not
# running; leaves a running one with an unchanged config alone.
entry_run() {
  local haproxy=$1 changed=$2 address=$3 domain=$4 port=$5 pid unit_changed
  if entry_with_systemd; then
    entry_render_unit "$haproxy" "$address" "$domain" "$port" >"$WORK/entry.service"
    unit_changed=$(put_file "$WORK/entry.service" "$ENTRY_UNIT_FILE" 0644)
    [[ -z "$unit_changed" ]] || systemctl daemon-reload
    systemctl is-enabled --quiet "$ENTRY_UNIT" 2>/dev/null || systemctl enable --quiet "$ENTRY_UNIT"
    if ! systemctl is-active --quiet "$ENTRY_UNIT"; then
      systemctl start "$ENTRY_UNIT" || return 1
      info "started $ENTRY_UNIT"
    elif [[ -n "$unit_changed" ]]; then
      systemctl restart "$ENTRY_UNIT" || return 1
      info "restarted $ENTRY_UNIT (its unit changed)"
    elif ((changed)); then
      entry_systemd_reload || return 1
      info "reloaded $ENTRY_UNIT"
    else
      info "unchanged: $ENTRY_UNIT running with $ENTRY_CONFIG"
    fi
    return 0
  fi
  if pid=$(entry_pid); then
    if ((!changed)); then
      info "unchanged: the entry point runs (pid $pid) with $ENTRY_CONFIG"
      return 0
    fi
    entry_start_daemon "$haproxy" "$pid" || return 1
    info "reloaded the entry point (pid $(entry_pid), was $pid)"
    return 0
  fi
  entry_start_daemon "$haproxy" || return 1
  info "started the entry point (pid $(entry_pid))"
}

# The running HAProxy's record: the sha256 of ENTRY_CONFIG and the pid running it (the pid file's:
# the daemon, or the unit's master, which keeps its pid across reloads).
entry_applied_record() {
  local pid
  pid=$(entry_pid) || return 1
  printf '%s %s\n' "$(sha256sum <"$ENTRY_CONFIG" | cut -c1-64)" "$pid"
}

# Whether the running HAProxy took ENTRY_CONFIG as it is now. The file alone does not say: a run
# cut between writing it and the reload (Ctrl-C reaching the SSH session; bench --only interrupt
# did, session 14) leaves the new file and HAProxy on the old one, and a rerun that compared
# files only would call that unchanged for ever.
entry_applied() {
  local record
  [[ -f "$ENTRY_APPLIED" && -f "$ENTRY_CONFIG" ]] || return 1
  record=$(entry_applied_record) || return 1
  [[ "$(cat "$ENTRY_APPLIED")" == "$record" ]]
}

entry_mark_applied() {
  local record
  if record=$(entry_applied_record); then
    printf '%s\n' "$record" >"$ENTRY_APPLIED.tmp" && mv -f "$ENTRY_APPLIED.tmp" "$ENTRY_APPLIED"
  fi
}

# Writes the rendered config (file NEW) as ENTRY_CONFIG when it differs, after `haproxy -c`
# accepts it, and (re)starts HAProxy; when the start or reload fails the previous config is put
# back (and brought up again where it had been running): the node keeps the entry point it had.
# A config on disk that the running HAProxy never took (entry_applied) counts as changed.
entry_apply() {
  local haproxy=$1 new=$2 address=$3 domain=$4 port=$5 changed=0 had_old=0 untaken=0 check
  if ! check=$("$haproxy" -c -f "$new" 2>&1); then
    printf '%s\n' "$check" | sed 's/^/haproxy -c: /' >&2
    fatal "the new entry point config does not validate: $ENTRY_CONFIG kept as it is"
  fi
  if [[ -f "$ENTRY_CONFIG" ]] && cmp -s "$new" "$ENTRY_CONFIG"; then
    if entry_applied || ! entry_pid >/dev/null; then
      info "unchanged: $ENTRY_CONFIG"
    else
      info "$ENTRY_CONFIG is written but the running entry point did not take it (a run cut before its reload): reloading"
      changed=1
      untaken=1
    fi
  else
    if [[ -f "$ENTRY_CONFIG" ]]; then
      cp -p "$ENTRY_CONFIG" "$WORK/entry.cfg.old"
      had_old=1
    fi
    put_file "$new" "$ENTRY_CONFIG" 0644 >/dev/null
    changed=1
  fi
  if entry_run "$haproxy" "$changed" "$address" "$domain" "$port"; then
    entry_mark_applied
    return 0
  fi
  ((changed)) || fatal "the entry point did not start with the unchanged $ENTRY_CONFIG"
  # The running one keeps the config it had; the file stays for the next run to try again.
  ((!untaken)) || fatal "the entry point did not take $ENTRY_CONFIG: it keeps serving with its previous config (the next run reloads again)"
  if ((had_old)); then
    put_file "$WORK/entry.cfg.old" "$ENTRY_CONFIG" 0644 >/dev/null
    entry_run "$haproxy" 0 "$address" "$domain" "$port" ||
      warn "the previous config did not come back up either"
    fatal "the entry point did not take the new config: the previous $ENTRY_CONFIG is back"
  fi
  rm -f "$ENTRY_CONFIG"
  fatal "the entry point did not start: $ENTRY_CONFIG removed (the next run tries again)"
}

# The whole entry point: address, config, process. CA is the trust file configure-node installed.
entry_ensure() {
  local haproxy=$1 domain=$2 port=$3 address=$4 stats_port=$5 ca=$6 master0=$7
  shift 7
  entry_address "$address"
  entry_render "$domain" "$port" "$address" "$stats_port" "$ca" "$master0" "$@" >"$WORK/entry.cfg"
  entry_apply "$haproxy" "$WORK/entry.cfg" "$address" "$domain" "$port"
}

# The address the entry point's frontend binds (from ENTRY_CONFIG), or nothing.
entry_bound_address() {
  [[ -f "$ENTRY_CONFIG" ]] || return 0
  awk '$1 == "frontend" { f = 1; next } f && $1 == "bind" { split($2, a, ":"); print a[1]; exit }' "$ENTRY_CONFIG"
}

# node_entry removed from the stack: the domain already maps to master0 again (the caller wrote
# /etc/hosts first); HAProxy is stopped, its config, unit and pid file and its address on lo
# removed. Nothing there, nothing done. Clients that resolved the domain before the change
# (Go's resolver rereads /etc/hosts at most every 5 s: dockerd) get WAIT_S to move first.
entry_remove() {
  local wait_s=${1:-6} address pid
  if [[ ! -f "$ENTRY_CONFIG" && ! -f "$ENTRY_UNIT_FILE" && ! -f "$ENTRY_PIDFILE" ]]; then
    return 0
  fi
  address=$(entry_bound_address)
  info "node_entry removed: stopping the entry point in ${wait_s}s (resolvers reread /etc/hosts)"
  sleep "$wait_s"
  if [[ -f "$ENTRY_UNIT_FILE" ]]; then
    if command -v systemctl >/dev/null && entry_with_systemd; then
      systemctl disable --now --quiet "$ENTRY_UNIT" || warn "could not stop $ENTRY_UNIT"
    fi
    rm -f "$ENTRY_UNIT_FILE"
    if command -v systemctl >/dev/null && entry_with_systemd; then systemctl daemon-reload; fi
  fi
  if pid=$(entry_pid); then
    kill "$pid"
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fatal "the entry point (pid $pid) did not stop within 5 s"
    info "stopped the entry point (pid $pid)"
  fi
  rm -f "$ENTRY_PIDFILE" "$ENTRY_CONFIG" "$ENTRY_SOCKET" "$ENTRY_APPLIED"
  if [[ -n "$address" ]] && ip -o -4 addr show dev lo | awk '{ print $4 }' | grep -qxF "$address/32"; then
    ip addr del "$address/32" dev lo
    info "removed $address/32 from lo"
  fi
  info "removed the entry point ($ENTRY_CONFIG)"
}
