#!/usr/bin/env bash
# Baseline for the bench: the recovery done the way sealer's removed `recover` command did it, one
# OpenSSH session per host, in sequence: launch the registry on the new master0 through its rootfs
# (`cd <rootfs>/scripts && bash init-registry.sh PORT VOLUME DOMAIN`), then rewrite every live
# host's /etc/hosts with sed (drop the domain's lines, append the new mapping with sealer's marker).
# No CA, records or verification: that is all the old command did, so the baseline is not
# handicapped by work the program does on top.
# Usage: sequential_recover.sh KEY KNOWN_HOSTS ROOTFS PORT DOMAIN NEW_MASTER0 HOST...
set -euo pipefail

main() {
  local key=$1 known=$2 rootfs=$3 port=$4 domain=$5 new=$6
  shift 6
  local ssh=(ssh -F none -i "$key" -o UserKnownHostsFile="$known" -o StrictHostKeyChecking=yes
    -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR)
  local pattern=${domain//./\\.} host
  "${ssh[@]}" "root@$new" "cd $rootfs/scripts && bash init-registry.sh $port $rootfs/registry $domain" 2>/dev/null
  for host in "$@"; do
    "${ssh[@]}" "root@$host" "sed -i -E '/[[:space:]]$pattern([[:space:]]|\$)/d' /etc/hosts && echo '$new $domain #hostalias-set-by-sealer' >>/etc/hosts"
  done
}

main "$@"
