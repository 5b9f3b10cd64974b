# shellcheck shell=bash
# The registry's own helpers, for the scripts that start or stop it (common.sh comes first).

# Stops the registry of a rootfs, whichever way it was started: the rootfs' own stop script (the
# lab and our images), else sealer's docker or nerdctl container `sealer-registry`.
stop_registry() {
  local rootfs=$1 tool
  if [[ -f "$rootfs/scripts/stop-registry.sh" ]]; then
    (cd "$rootfs/scripts" && bash stop-registry.sh)
    return 0
  fi
  for tool in docker nerdctl; do
    if command -v "$tool" >/dev/null 2>&1 && "$tool" inspect sealer-registry >/dev/null 2>&1; then
      "$tool" rm -f sealer-registry >/dev/null
      info "stopped container sealer-registry ($tool)"
      return 0
    fi
  done
  info "no registry running"
}
