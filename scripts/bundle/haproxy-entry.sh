#!/usr/bin/env bash
# bin/haproxy-entry of the HAProxy bundle (python -m cli haproxy-bundle): runs the bundle's
# haproxy through the bundle's own dynamic loader and libraries, so it depends on none of the
# host's (an air-gapped host without haproxy, or with an older glibc or OpenSSL, still runs it).
# --argv0 makes haproxy see this wrapper as its own path: the master process re-executes
# argv[0] on a reload (systemd's ExecReload sends USR2), which must come back through the loader.
set -euo pipefail

main() {
  local bundle
  bundle=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)
  exec "$bundle/lib/ld-linux-x86-64.so.2" --library-path "$bundle/lib" \
    --argv0 "$bundle/bin/haproxy-entry" "$bundle/bin/haproxy" "$@"
}

main "$@"
