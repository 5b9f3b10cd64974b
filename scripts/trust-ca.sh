#!/usr/bin/env bash
# Installs the registry CA (PEM on stdin) for docker and containerd on this node.
# Usage: trust-ca.sh DOMAIN PORT
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi

render_hosts_toml() {
  local domain=$1 port=$2
  cat <<TOML
server = "https://$domain:$port"

[host."https://$domain:$port"]
  capabilities = ["pull", "resolve", "push"]
  ca = "/etc/containerd/certs.d/$domain:$port/ca.crt"
TOML
}

main() {
  local domain=$1 port=$2 work
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the path is fixed
  trap "rm -rf '$work'" EXIT
  cat >"$work/ca.crt"
  grep -q 'BEGIN CERTIFICATE' "$work/ca.crt" || fatal "no PEM certificate on stdin"
  render_hosts_toml "$domain" "$port" >"$work/hosts.toml"
  put_file "$work/ca.crt" "/etc/docker/certs.d/$domain:$port/ca.crt" 0644 >/dev/null
  put_file "$work/ca.crt" "/etc/containerd/certs.d/$domain:$port/ca.crt" 0644 >/dev/null
  put_file "$work/hosts.toml" "/etc/containerd/certs.d/$domain:$port/hosts.toml" 0644 >/dev/null
}

main "$@"
