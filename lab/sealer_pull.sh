#!/usr/bin/env bash
# A kubelet-style pull on a lab host with its containerd, trusting what the CRI of that containerd
# trusts: the directory its config names as `config_path` (lab/sealer_state.py passes it).
# containerd 1.6 reads <config_path>/<host:port>/hosts.toml when it exists, else (docker's layout)
# every *.crt there as a CA. The kubelet's credentials reach a CRI pull per request; here they
# become an Authorization header in a private copy of that directory (0700, removed at exit).
#   sealer_pull.sh CONFIG_PATH DOMAIN PORT REPO:TAG USER NAMESPACE SECONDS   (stdin: password)
# Prints the digest the tag resolved to; ctr's errors on stderr; exit 1 when the pull failed.
set -uo pipefail

main() {
  local certs=$1 domain=$2 port=$3 image=$2:$3/$4 user=$5 ns=$6 limit=$7
  local src="${certs%/}/$domain:$port" pass="" work dest token crt cas=""
  [ -z "$user" ] || IFS= read -r pass || true
  umask 077
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the values are fixed for this run
  trap "clean '$ns' '$work'" EXIT
  dest=$work/certs.d/$domain:$port
  mkdir -p "$dest"
  if [ -d "$src" ]; then cp -pR "$src/." "$dest/"; fi
  if [ ! -f "$dest/hosts.toml" ]; then
    for crt in "$dest"/*.crt; do
      [ -f "$crt" ] && cas+="${cas:+, }\"$crt\""
    done
    {
      printf 'server = "https://%s:%s"\n' "$domain" "$port"
      printf '\n[host."https://%s:%s"]\n  capabilities = ["pull", "resolve"]\n' "$domain" "$port"
      [ -z "$cas" ] || printf '  ca = [%s]\n' "$cas"
    } >"$dest/hosts.toml"
  fi
  if [ -n "$user" ]; then
    token=$(printf '%s:%s' "$user" "$pass" | base64 | tr -d '\n')
    printf '\n[host."https://%s:%s".header]\n  Authorization = "Basic %s"\n' "$domain" "$port" \
      "$token" >>"$dest/hosts.toml"
  fi
  timeout "$limit" ctr -n "$ns" content fetch --hosts-dir "$work/certs.d" "$image" >/dev/null || return 1
  ctr -n "$ns" images ls | awk -v i="$image" '$1 == i { print $3 }'
}

clean() {
  local ns=$1 work=$2 i b
  for i in $(ctr -n "$ns" images ls -q 2>/dev/null); do ctr -n "$ns" images rm --sync "$i" >/dev/null 2>&1; done
  for b in $(ctr -n "$ns" content ls -q 2>/dev/null); do ctr -n "$ns" content rm "$b" >/dev/null 2>&1; done
  ctr namespaces rm "$ns" >/dev/null 2>&1
  rm -rf "$work"
}

main "$@"
