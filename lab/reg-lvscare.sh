#!/usr/bin/env bash
# The lab's stand-in for sealer's reg-lvscare (an IPVS virtual server VIP:PORT over the masters'
# registries, kept by a health checker): nftables DNAT in the node's network namespace, run by
# lab/vip.py. Two commands:
#   reg-lvscare.sh apply TABLE VIP PORT [BACKEND...]   write the table with these backends
#   reg-lvscare.sh care  TABLE VIP PORT INTERVAL TIMEOUT BACKEND...
#       every INTERVAL seconds probe https://BACKEND:PORT/ (all at once, each bounded by TIMEOUT
#       seconds; any HTTP answer is healthy, TLS unverified, as lvscare does) and rewrite the
#       table when the healthy set changed.
# The table is replaced whole in one nft transaction: a connect sees the old set or the new one.
# Set `healthy` holds the backends in rotation (lab/vip.py status() reads it). With none, a
# connect to VIP:PORT is refused, as IPVS refuses a virtual server with no real server.
set -euo pipefail

log() { printf '%s reg-lvscare: %s\n' "$(date -u +%FT%TZ)" "$*"; }
fatal() { log "error: $*" >&2; exit 1; }

render() {
  local table=$1 vip=$2 port=$3 i=0 elements="" map=""
  shift 3
  for backend in "$@"; do
    elements+="${elements:+, }$backend"
    map+="${map:+, }$i : $backend"
    i=$((i + 1))
  done
  printf 'table ip %s\ndelete table ip %s\ntable ip %s {\n' "$table" "$table" "$table"
  printf '  set healthy {\n    type ipv4_addr\n'
  [ -z "$elements" ] || printf '    elements = { %s }\n' "$elements"
  printf '  }\n'
  printf '  chain nat_out {\n    type nat hook output priority -100; policy accept;\n'
  # numgen inc: round robin, as lvscare's virtual server ("rr", vendored lvscare utils.go)
  [ "$i" -eq 0 ] || printf '    ip daddr %s tcp dport %s dnat to numgen inc mod %s map { %s }\n' \
    "$vip" "$port" "$i" "$map"
  printf '  }\n'
  printf '  chain filter_out {\n    type filter hook output priority 0; policy accept;\n'
  printf '    ip daddr %s tcp dport %s reject with tcp reset\n  }\n}\n' "$vip" "$port"
}

apply() {
  render "$@" | nft -f -
}

probe() {
  local backend=$1 port=$2 timeout=$3
  curl -k -s -o /dev/null --connect-timeout "$timeout" --max-time "$timeout" \
    "https://$backend:$port/"
}

care() {
  # current starts unknown: the first round writes the table whatever it held
  local table=$1 vip=$2 port=$3 interval=$4 timeout=$5 current="?" next i
  shift 5
  local -a backends=("$@") pids healthy
  [ "${#backends[@]}" -gt 0 ] || fatal "no backend to care for"
  trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
  log "vs $vip:$port, rs ${backends[*]}, interval ${interval}s, timeout ${timeout}s"
  while true; do
    pids=()
    for backend in "${backends[@]}"; do
      probe "$backend" "$port" "$timeout" &
      pids+=("$!")
    done
    healthy=()
    for i in "${!backends[@]}"; do
      if wait "${pids[$i]}"; then
        healthy+=("${backends[$i]}")
      fi
    done
    next="${healthy[*]}"
    if [ "$next" != "$current" ]; then
      apply "$table" "$vip" "$port" "${healthy[@]}"
      log "healthy: ${next:-none} (was: ${current:-none})"
      current=$next
    fi
    sleep "$interval" &
    wait "$!"
  done
}

main() {
  local command=${1:-}
  shift || true
  case "$command" in
    apply) [ "$#" -ge 3 ] || fatal "usage: apply TABLE VIP PORT [BACKEND...]"; apply "$@" ;;
    care) [ "$#" -ge 6 ] || fatal "usage: care TABLE VIP PORT INTERVAL TIMEOUT BACKEND..."; care "$@" ;;
    *) fatal "unknown command '${command}' (apply or care)" ;;
  esac
}

main "$@"
