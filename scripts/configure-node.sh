#!/usr/bin/env bash
# Makes this host a client of the registry: with PORT, installs the registry CA (PEM on stdin) for
# docker and containerd as the trust of DOMAIN:PORT, unless a *.crt there already holds that
# certificate (sealer's <domain>.crt is kept as it is, and no ca.crt is added beside it); then maps
# DOMAIN to IP in /etc/hosts with sealer's marker, removing every other mapping of DOMAIN
# (sealer's `#hostalias-set-by-sealer` / `#hostalias-registry` lines included) and keeping other
# names; a file whose one mapping of DOMAIN already points at IP is kept as it is (marked or not).
# Each file is written only when its content differs. Without PORT (insecure mode) there
# is nothing to trust. --keep-hosts (sealer's HA layout) leaves /etc/hosts alone: there a master
# maps DOMAIN to itself and a node to lvscare's VIP, both sealer's lines; hosts.toml then bounds the
# dial of its two entries (both the VIP on a node) to DIAL_TIMEOUT, so containerd 2.0.7+ retries a
# connection round robin sent to a dead master on a new one after 2 s.
# containerd's trust and hosts.toml go under the CRI config_path the node's containerd uses
# (lib/hosts-dir.sh; first entry of a list; /etc/containerd/certs.d when unset).
# Each --mirror names a warm standby (a read-only registry on a replica of the data): containerd's
# hosts.toml lists DOMAIN:PORT (master0, the only host that takes pushes) first, then each mirror
# as https://MIRROR:PORT for pull and resolve, so a pull goes on when master0 does not answer.
# --entry ADDRESS (registry.local_registry.node_entry, needs PORT): HAProxy on ADDRESS:PORT, a
# node-local address put on `lo`, forwards to IP and, when IP fails its health check, to the
# first healthy mirror; stats on 127.0.0.1:N (--entry-stats-port, default 5099); DOMAIN maps to
# ADDRESS instead of IP (scripts/lib/entry.sh). Refused with --keep-hosts, without PORT, or with
# ADDRESS equal to IP, before anything changes. Which HAProxy (--haproxy, node_entry.haproxy):
# auto (default), the host's when installed and >= 2.2, else the bundle; system, the host's or a
# refusal; bundle, always the bundle. --haproxy-bundle FILE SHA256 names the bundle's tarball the
# program copied to this host (unpacked once per version under /opt/sealer-registry/haproxy).
# Without --entry, an entry point an earlier run set up is removed once DOMAIN maps to IP again.
# --entry-check-interval S: seconds between HAProxy's health checks of each server (default 1;
# node_entry.check_interval_s: large clusters lengthen it, a dead server is still left at the
# first failed connect, `observe layer4`).
# Usage: configure-node.sh [--keep-hosts] [--entry ADDRESS [--entry-stats-port N]
#          [--entry-check-interval S] [--haproxy auto|system|bundle] [--haproxy-bundle FILE SHA256]]
#          [--mirror IP]...
#          DOMAIN IP [PORT] [HOSTS_FILE]
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi
if ! declare -F trust_file_in >/dev/null; then
  # shellcheck source=lib/trust.sh
  source "${BASH_SOURCE[0]%/*}/lib/trust.sh"
fi
if ! declare -F containerd_hosts_dir >/dev/null; then
  # shellcheck source=lib/containerd.sh
  source "${BASH_SOURCE[0]%/*}/lib/containerd.sh"
  # shellcheck source=lib/hosts-dir.sh
  source "${BASH_SOURCE[0]%/*}/lib/hosts-dir.sh"
fi
if ! declare -F entry_ensure >/dev/null; then
  # shellcheck source=lib/entry.sh
  source "${BASH_SOURCE[0]%/*}/lib/entry.sh"
fi

WORK=""
cleanup() { [[ -z "$WORK" ]] || rm -rf "$WORK"; }

MIRRORS=()
# sealer's HA layout (--keep-hosts): on a node the domain is lvscare's VIP, so the [host] table and
# the server of hosts.toml are the VIP twice, and a request whose connection round robin sent to a
# dead master is tried again on a new connection (docs/how-it-works.md, "Pulls with master0 dead").
VIA_VIP=0
# The trust file of DOMAIN:PORT that containerd reads (set by trust_ca): the entry point's health
# check verifies the registry with it.
TRUST_CA=""
# How long containerd waits for a TCP connect to one registry host before it tries the next.
# Honoured by containerd 2.0.7+ and 2.1+ only; 1.6 and 1.7 ignore the key and wait 30 s
# (docs/how-it-works.md, "Mirrors on nodes").
readonly DIAL_TIMEOUT=2s

# The CA at the top level too: containerd falls back to the server entry after the host entries
# fail (a 404 as well), and without it the operator reads an x509 error instead of "not found".
# containerd tries the [host] tables in file order; the leaf certificate carries every deploy
# host's IP as an IP SAN, so https://MIRROR:PORT verifies with the same CA.
render_hosts_toml() {
  local domain=$1 port=$2 ca=${3:-/etc/containerd/certs.d/$1:$2/ca.crt} mirror
  printf 'server = "https://%s:%s"\nca = "%s"\n' "$domain" "$port" "$ca"
  # The server entry is tried last, after every [host] table failed, with the top-level settings
  # only (core/remotes/docker/config/hosts.go@v2.2.9 parseHostsFile): without its own
  # dial_timeout containerd 2.x waits 30 s on a dead master0 there (measured: a pull with master0
  # killed and both standbys failing took 34 s to fail, docs/how-it-works.md).
  # In the HA layout the same bound makes that second try come after 2 s instead of 30 s.
  local bounded=0
  ((${#MIRRORS[@]} == 0 && !VIA_VIP)) || bounded=1
  ((!bounded)) || printf 'dial_timeout = "%s"\n' "$DIAL_TIMEOUT"
  cat <<TOML

[host."https://$domain:$port"]
  capabilities = ["pull", "resolve", "push"]
  ca = "$ca"
TOML
  ((!bounded)) || printf '  dial_timeout = "%s"\n' "$DIAL_TIMEOUT"
  ((${#MIRRORS[@]})) || return 0
  for mirror in "${MIRRORS[@]}"; do
    cat <<TOML

[host."https://$mirror:$port"]
  capabilities = ["pull", "resolve"]
  ca = "$ca"
  dial_timeout = "$DIAL_TIMEOUT"
TOML
  done
}

# Prints the file of DIR that trusts the CA: one that already holds it, else ca.crt, written.
install_trust() {
  local dir=$1 kept
  if kept=$(trust_file_in "$dir" "$WORK/ca.crt"); then
    info "unchanged: $kept already holds the CA"
    printf '%s
' "$kept"
    return 0
  fi
  put_file "$WORK/ca.crt" "$dir/ca.crt" 0644 >/dev/null
  printf '%s
' "$dir/ca.crt"
}

# containerd's hosts.toml and the CA it names go under the config_path the node's containerd
# really reads (lib/hosts-dir.sh): /etc/containerd/certs.d by default, /etc/docker/certs.d on
# sealer's basefs nodes, where it sits beside docker's trust (docker reads only the *.crt there).
trust_ca() {
  local domain=$1 port=$2 ca hosts_dir
  cat >"$WORK/ca.crt"
  grep -q 'BEGIN CERTIFICATE' "$WORK/ca.crt" || fatal "no PEM certificate on stdin"
  install_trust "/etc/docker/certs.d/$domain:$port" >/dev/null
  hosts_dir=$(containerd_hosts_dir)
  info "containerd reads registry hosts from $hosts_dir"
  ca=$(install_trust "$hosts_dir/$domain:$port")
  TRUST_CA=$ca
  render_hosts_toml "$domain" "$port" "$ca" >"$WORK/hosts.toml"
  put_file "$WORK/hosts.toml" "$hosts_dir/$domain:$port/hosts.toml" 0644 >/dev/null
}

render_hosts() {
  local file=$1 domain=$2 ip=$3
  awk -v d="$domain" -v ip="$ip" '
    {
      body = $0; p = index(body, "#")
      if (p > 0) body = substr(body, 1, p - 1)
      n = split(body, f, " ")
      if (n < 2) { print; next }
      out = f[1]; kept = 0; hit = 0
      for (i = 2; i <= n; i++) { if (f[i] == d) hit = 1; else { out = out " " f[i]; kept++ } }
      if (!hit) { print; next }
      if (kept > 0) print out
    }
    END { print ip " " d " #hostalias-set-by-sealer" }
  ' "$file"
}

# Whether FILE maps DOMAIN on exactly one line, and to IP: then the file is left as it is, whatever
# that line's marker (sealer v0.8 writes `<ip> <domain>` unmarked, pkg/runtime/registry.go@v0.8.7;
# v0.9+ `#hostalias-set-by-sealer`), so a host sealer set up is not rewritten by the first `up`.
maps_only_to() {
  local file=$1 domain=$2 ip=$3
  awk -v d="$domain" -v ip="$ip" '
    {
      body = $0; p = index(body, "#")
      if (p > 0) body = substr(body, 1, p - 1)
      n = split(body, f, " ")
      for (i = 2; i <= n; i++) if (f[i] == d) { lines++; if (f[1] != ip) other = 1; break }
    }
    END { exit !(lines == 1 && !other) }
  ' "$file"
}

# Renames into place where it can; a bind-mounted /etc/hosts (containers) refuses renames with
# EBUSY, and there we rewrite the file in place, keeping its inode.
replace_file() {
  local src=$1 dest=$2
  if cp "$src" "$dest.sealer-new" 2>/dev/null && chmod 0644 "$dest.sealer-new" &&
    mv -f "$dest.sealer-new" "$dest" 2>/dev/null; then
    return 0
  fi
  rm -f "$dest.sealer-new"
  cat "$src" >"$dest"
}

set_hosts() {
  local domain=$1 ip=$2 file=$3
  [[ -f "$file" ]] || : >"$file"
  if maps_only_to "$file" "$domain" "$ip"; then
    info "unchanged: $domain -> $ip"
    return 0
  fi
  render_hosts "$file" "$domain" "$ip" >"$WORK/hosts"
  if cmp -s "$WORK/hosts" "$file"; then
    info "unchanged: $domain -> $ip"
    return 0
  fi
  replace_file "$WORK/hosts" "$file"
  info "set $domain -> $ip in $file"
}

main() {
  local keep_hosts=0 entry="" entry_stats_port=5099 haproxy="" haproxy_mode=auto bundle="" bundle_sha=""
  while [[ "${1:-}" == --* ]]; do
    case $1 in
      --keep-hosts)
        keep_hosts=1
        VIA_VIP=1
        shift
        ;;
      --mirror)
        [[ "${2:-}" =~ ^[0-9a-fA-F.:]+$ ]] || fatal "--mirror needs an IP address, got '${2:-}'"
        MIRRORS+=("$2")
        shift 2
        ;;
      --entry)
        [[ "${2:-}" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
          fatal "--entry needs an IPv4 address (node-local, put on lo), got '${2:-}'"
        entry=$2
        shift 2
        ;;
      --entry-stats-port)
        [[ "${2:-}" =~ ^[0-9]+$ ]] || fatal "--entry-stats-port needs a port number, got '${2:-}'"
        entry_stats_port=$2
        shift 2
        ;;
      --entry-check-interval)
        [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || fatal "--entry-check-interval needs whole seconds (>= 1), got '${2:-}'"
        ENTRY_CHECK_INTERVAL=$2
        shift 2
        ;;
      --haproxy)
        [[ "${2:-}" =~ ^(auto|system|bundle)$ ]] || fatal "--haproxy needs auto, system or bundle, got '${2:-}'"
        haproxy_mode=$2
        shift 2
        ;;
      --haproxy-bundle)
        [[ -n "${2:-}" && "${3:-}" =~ ^[0-9a-f]{64}$ ]] ||
          fatal "--haproxy-bundle needs FILE SHA256 (64 hex digits), got '${2:-}' '${3:-}'"
        bundle=$2 bundle_sha=$3
        shift 3
        ;;
      *) fatal "unknown option '$1'" ;;
    esac
  done
  (($# >= 2)) || fatal "usage: configure-node.sh [--keep-hosts] [--entry ADDRESS [--entry-stats-port N] [--entry-check-interval S] [--haproxy MODE] [--haproxy-bundle FILE SHA256]] [--mirror IP]... DOMAIN IP [PORT] [HOSTS_FILE]"
  local domain=$1 ip=$2 port=${3:-} file=${4:-/etc/hosts}
  if [[ -n "$entry" ]]; then
    # Refused before anything changes on the host.
    ((!keep_hosts)) || fatal "--entry with --keep-hosts: in sealer's HA layout nodes reach the registry through lvscare's VIP"
    [[ -n "$port" ]] || fatal "--entry needs TLS (a PORT and the CA): the entry point's health check verifies the registry"
    [[ "$entry" != "$ip" ]] || fatal "--entry $entry is master0's address: it must be a node-local address of its own"
    haproxy=$(entry_haproxy "$haproxy_mode" "$bundle" "$bundle_sha") || exit 1
  fi
  WORK=$(mktemp -d)
  trap cleanup EXIT
  [[ -z "$port" ]] || trust_ca "$domain" "$port"
  if ((keep_hosts)); then
    info "kept: $file (its $domain line is sealer's in the HA layout)"
    return 0
  fi
  if [[ -n "$entry" ]]; then
    entry_ensure "$haproxy" "$domain" "$port" "$entry" "$entry_stats_port" "$TRUST_CA" "$ip" "${MIRRORS[@]}"
    set_hosts "$domain" "$entry" "$file"
    return 0
  fi
  set_hosts "$domain" "$ip" "$file"
  entry_remove 6
}

main "$@"
