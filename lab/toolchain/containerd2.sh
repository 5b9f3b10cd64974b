#!/usr/bin/env bash
# Builds containerd 2.x (`containerd` and `ctr`) from the Go module proxy, for the lab tests that
# run a node on containerd 2.x (lab.runtimes.containerd2). Opt-in (`make toolchain-containerd2`),
# not part of `make toolchain`: a cold build (empty GOMODCACHE and GOCACHE) took 210 s on this
# 2-core machine under load (docs/testing.md), and CI's cold run has no such time to spare.
#
# Built with CGO_ENABLED=0 and without the btrfs, devmapper and zfs snapshotters: the lab pulls
# images and unpacks them with the overlayfs snapshotter; it runs no containers.
# Output: ${SEALER_TOOLCHAIN_CACHE:-$HOME/.cache/sealer-registry-toolchain}/containerd-<version>-<key>/bin,
# where <key> covers the version, the build tags, the Go version and this file. Like build.sh: a
# complete key dir is reused as is; a build happens in a temp dir renamed into place when complete.
# GOMODCACHE, GOCACHE and GOPROXY are taken from the environment (`go env`).
#
# Usage: containerd2.sh [build]   build unless cached, then print the bin dir on the last line
#        containerd2.sh bin-dir   print the bin dir (built or not)
#        containerd2.sh version   print the pinned version
set -euo pipefail

readonly CONTAINERD2_VERSION="2.2.9"
readonly MODULE="github.com/containerd/containerd/v2"
readonly TAGS="no_btrfs no_devmapper no_zfs"

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
readonly SELF
readonly CACHE_ROOT="${SEALER_TOOLCHAIN_CACHE:-$HOME/.cache/sealer-registry-toolchain}"

BUILD_TMP=""
CHILD=""

info() { printf 'toolchain-containerd2: %s\n' "$*" >&2; }
fatal() { printf 'toolchain-containerd2: error: %s\n' "$*" >&2; exit 1; }
on_err() { printf 'toolchain-containerd2: failed at %s:%s: %s\n' "${BASH_SOURCE[1]:-?}" "${BASH_LINENO[0]}" "$BASH_COMMAND" >&2; }
cleanup() {
  if [[ -n "$CHILD" ]]; then
    pkill -TERM -P "$CHILD" 2>/dev/null || true
    kill "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  if [[ -n "$BUILD_TMP" && -d "$BUILD_TMP" ]]; then rm -rf "$BUILD_TMP"; fi
}

cache_key() {
  local digest
  digest="$(printf 'containerd=%s tags=%s go=%s\n%s\n' "$CONTAINERD2_VERSION" "$TAGS" \
    "$(go env GOVERSION 2>/dev/null || echo unknown)" "$(sha256sum <"$SELF")" | sha256sum | cut -c1-16)"
  printf 'containerd-%s-%s\n' "$CONTAINERD2_VERSION" "$digest"
}

now_us() { printf '%s' "${EPOCHREALTIME/[.,]/}"; }
seconds_since() { local us=$(( $(now_us) - $1 )); printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000)); }

build() {
  local key="$1" target="$2" bin start v="v${CONTAINERD2_VERSION}"
  command -v go >/dev/null || fatal "go is not on PATH"
  BUILD_TMP="$(mktemp -d "$CACHE_ROOT/.c2build-${key}.XXXXXX")"
  bin="$BUILD_TMP/out/bin"
  mkdir -p "$bin"
  start="$(now_us)"
  info "building containerd and ctr ${v} (GOMODCACHE=$(go env GOMODCACHE), GOCACHE=$(go env GOCACHE))"
  # `go install pkg@version` builds with the module's own go.mod and go.sum: nothing to pin here
  # but the version. In the background so that a TERM to this script reaches the compiler too.
  GOBIN="$bin" CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" go install -tags "$TAGS" \
    -ldflags "-s -w -X ${MODULE}/version.Version=${v}" "${MODULE}/cmd/containerd@${v}" "${MODULE}/cmd/ctr@${v}" &
  CHILD=$!
  wait "$CHILD"
  CHILD=""
  "$bin/containerd" --version | grep -q " ${v}\b" || fatal "the built containerd does not say ${v}"
  printf 'containerd %s\nctr %s\ngo %s\ntags %s\n' "$v" "$v" "$(go env GOVERSION)" "$TAGS" >"$bin/VERSIONS"
  : >"$BUILD_TMP/out/COMPLETE"
  if ! mv -T "$BUILD_TMP/out" "$target" 2>/dev/null; then
    [[ -f "$target/COMPLETE" ]] || fatal "could not move the build into $target"
    info "another build finished first; keeping it"
  fi
  info "built in $(seconds_since "$start") s"
}

main() {
  local command="${1:-build}" key target
  trap on_err ERR
  trap cleanup EXIT
  key="$(cache_key)"
  target="$CACHE_ROOT/$key"
  case "$command" in
    version) printf '%s\n' "$CONTAINERD2_VERSION" ;;
    bin-dir) printf '%s\n' "$target/bin" ;;
    build)
      mkdir -p "$CACHE_ROOT"
      exec 9>"$CACHE_ROOT/.lock-containerd2"
      flock 9
      if [[ -f "$target/COMPLETE" ]]; then
        info "containerd ${CONTAINERD2_VERSION} cached at $target/bin"
      else
        rm -rf "$CACHE_ROOT"/.c2build-*
        build "$key" "$target"
      fi
      printf '%s\n' "$target/bin"
      ;;
    *) fatal "unknown command '$command' (build | bin-dir | version)" ;;
  esac
}

main "$@"
