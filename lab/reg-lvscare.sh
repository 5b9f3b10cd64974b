#!/usr/bin/env bash
# The lab's stand-in for sealer's reg-lvscare (an IPVS virtual server VIP:PORT over the masters'
# registries, kept by a health checker): nftables DNAT in the node's network namespace, run by
# lab/vip.py. Two commands:
#   reg-lvscare.sh apply TABLE VIP PORT [BACKEND...]   write the table with these backends
#   reg-lvscare.sh care  TABLE VIP PORT INTERVAL DIAL BACKEND...
#       what lvscare's `care` loop does (vendored github.com/labring/lvscare care/care.go,
#       service/service.go, utils/utils.go in sealerio/sealer@v0.11.0): every BACKEND in rotation
#       at start (createVsAndRs), then on a ticker of INTERVAL seconds probe the backends ONE
#       AFTER THE OTHER, in the order given, with GET https://BACKEND:PORT/ (TLS unverified, any
#       HTTP answer is healthy), taking a backend out right after its own failed probe and back
#       right after a good one. The probe is Go's http.Get on http.DefaultTransport: dial bounded
#       by 30 s (DIAL), TLS handshake by 10 s, TCP keepalive every 30 s, no overall limit. curl
#       bounds connect + TLS by DIAL together (a TLS stall: 30 s where Go gives up at 10 s) and
#       sets the same keepalive, with no overall limit either: a master that dies while a probe
#       waits for its answer holds the round until keepalive gives up (30 s + 9 probes x 30 s,
#       the kernel's default count), in lvscare as here.
#       Ticker: a tick that comes while a round runs waits (Go buffers one), the others are lost.
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
  local backend=$1 port=$2 dial=$3
  curl -k -s -o /dev/null --connect-timeout "$dial" --keepalive-time 30 "https://$backend:$port/"
}

# Seconds to sleep after a round that started at BEGAN and ended at ENDED on a ticker of INTERVAL
# started at START: 0 when a tick came during the round (Go's ticker channel holds one), else
# until the next tick.
ticker_wait() {
  awk -v start="$1" -v interval="$2" -v began="$3" -v ended="$4" 'BEGIN {
    k = int((began - start) / interval) + 1
    tick = start + k * interval
    printf "%.3f\n", (tick > ended ? tick - ended : 0)
  }'
}

care() {
  local table=$1 vip=$2 port=$3 interval=$4 dial=$5 start began backend now
  shift 5
  local -a backends=("$@") rotation
  local -A out=()
  [ "${#backends[@]}" -gt 0 ] || fatal "no backend to care for"
  trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
  log "vs $vip:$port, rs ${backends[*]}, interval ${interval}s, dial ${dial}s, sequential probes"
  apply "$table" "$vip" "$port" "${backends[@]}"
  log "healthy: ${backends[*]} (was: none)"
  start=$EPOCHREALTIME
  sleep "$interval" &
  wait "$!"
  while true; do
    began=$EPOCHREALTIME
    for backend in "${backends[@]}"; do
      now=""
      if probe "$backend" "$port" "$dial"; then
        [ -z "${out[$backend]:-}" ] || { unset "out[$backend]"; now=back; }
      else
        [ -n "${out[$backend]:-}" ] || { out[$backend]=1; now=out; }
      fi
      [ -n "$now" ] || continue
      rotation=()
      for b in "${backends[@]}"; do [ -n "${out[$b]:-}" ] || rotation+=("$b"); done
      apply "$table" "$vip" "$port" "${rotation[@]}"
      log "healthy: ${rotation[*]:-none} ($backend $now)"
    done
    sleep "$(ticker_wait "$start" "$interval" "$began" "$EPOCHREALTIME")" &
    wait "$!"
  done
}

main() {
  local command=${1:-}
  shift || true
  case "$command" in
    apply) [ "$#" -ge 3 ] || fatal "usage: apply TABLE VIP PORT [BACKEND...]"; apply "$@" ;;
    care) [ "$#" -ge 6 ] || fatal "usage: care TABLE VIP PORT INTERVAL DIAL BACKEND..."; care "$@" ;;
    *) fatal "unknown command '${command}' (apply or care)" ;;
  esac
}

main "$@"
