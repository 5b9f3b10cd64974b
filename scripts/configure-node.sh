#!/usr/bin/env bash
# Makes this host a client of the registry: with PORT, installs the registry CA (PEM on stdin) for
# docker and containerd as the trust of DOMAIN:PORT; then maps DOMAIN to IP in /etc/hosts with
# sealer's marker, removing every other mapping of DOMAIN (sealer's `#hostalias-set-by-sealer` /
# `#hostalias-registry` lines included) and keeping other names. Each file is written only when
# its content differs. Without PORT (insecure mode) there is nothing to trust.
# Usage: configure-node.sh DOMAIN IP [PORT] [HOSTS_FILE]
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi

WORK=""
cleanup() { [[ -z "$WORK" ]] || rm -rf "$WORK"; }

# The CA at the top level too: containerd falls back to the server entry after the host entry
# fails (a 404 as well), and without it the operator reads an x509 error instead of "not found".
render_hosts_toml() {
  local domain=$1 port=$2
  cat <<TOML
server = "https://$domain:$port"
ca = "/etc/containerd/certs.d/$domain:$port/ca.crt"

[host."https://$domain:$port"]
  capabilities = ["pull", "resolve", "push"]
  ca = "/etc/containerd/certs.d/$domain:$port/ca.crt"
TOML
}

trust_ca() {
  local domain=$1 port=$2
  cat >"$WORK/ca.crt"
  grep -q 'BEGIN CERTIFICATE' "$WORK/ca.crt" || fatal "no PEM certificate on stdin"
  render_hosts_toml "$domain" "$port" >"$WORK/hosts.toml"
  put_file "$WORK/ca.crt" "/etc/docker/certs.d/$domain:$port/ca.crt" 0644 >/dev/null
  put_file "$WORK/ca.crt" "/etc/containerd/certs.d/$domain:$port/ca.crt" 0644 >/dev/null
  put_file "$WORK/hosts.toml" "/etc/containerd/certs.d/$domain:$port/hosts.toml" 0644 >/dev/null
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
  render_hosts "$file" "$domain" "$ip" >"$WORK/hosts"
  if cmp -s "$WORK/hosts" "$file"; then
    info "unchanged: $domain -> $ip"
    return 0
  fi
  replace_file "$WORK/hosts" "$file"
  info "set $domain -> $ip in $file"
}

main() {
  local domain=$1 ip=$2 port=${3:-} file=${4:-/etc/hosts}
  WORK=$(mktemp -d)
  trap cleanup EXIT
  [[ -z "$port" ]] || trust_ca "$domain" "$port"
  set_hosts "$domain" "$ip" "$file"
}

main "$@"
