#!/usr/bin/env bash
# Maps DOMAIN to IP in /etc/hosts with sealer's marker, removing every other mapping of DOMAIN
# (sealer's `#hostalias-set-by-sealer` / `#hostalias-registry` lines included). Keeps other names.
# Usage: set-hosts.sh DOMAIN IP [HOSTS_FILE]
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi

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

main() {
  local domain=$1 ip=$2 file=${3:-/etc/hosts} rendered
  [[ -f "$file" ]] || : >"$file"
  rendered=$(mktemp)
  # shellcheck disable=SC2064  # expand now: the path is fixed
  trap "rm -f '$rendered'" EXIT
  render_hosts "$file" "$domain" "$ip" >"$rendered"
  if cmp -s "$rendered" "$file"; then
    info "unchanged: $domain -> $ip"
    return 0
  fi
  replace_file "$rendered" "$file"
  info "set $domain -> $ip in $file"
}

main "$@"
