#!/usr/bin/env bash
# Builds one of the lab's extra Go tools from the Go module proxy with `go install pkg@version`
# (the module's own go.mod and go.sum decide every dependency: nothing to pin here but the
# version), each in a cache dir of its own, apart from build.sh's engine toolchain (a new tool
# or version here never invalidates that 20-minute build):
#   containerd2  containerd and ctr 2.x, for the lab's containerd 2.x nodes (lab.runtimes). Opt-in
#                (`make toolchain-containerd2`): a cold build took 210 s on this 2-core machine
#                under load, and CI's cold run has no such time to spare. CGO_ENABLED=0, without
#                the btrfs, devmapper and zfs snapshotters: the lab pulls and unpacks images with
#                overlayfs; it runs no containers.
#   versitygw    Versity S3 Gateway (Apache-2.0; an S3 server over a POSIX directory), the lab's
#                S3-compatible state store (lab/s3.py) for the s3:// backend tests. Part of
#                `make toolchain` (CI builds it beside the engine toolchain).
# Output: ${SEALER_TOOLCHAIN_CACHE:-$HOME/.cache/sealer-registry-toolchain}/<tool>-<version>-<key>/bin,
# where <key> covers the version, the build tags, the Go version and this file. Like build.sh: a
# complete key dir is reused as is; a build happens in a temp dir renamed into place when complete.
# GOMODCACHE, GOCACHE and GOPROXY are taken from the environment (`go env`).
#
# Usage: gotool.sh TOOL [build]   build unless cached, then print the bin dir on the last line
#        gotool.sh TOOL bin-dir   print the bin dir (built or not)
#        gotool.sh TOOL version   print the pinned version
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
readonly SELF
readonly CACHE_ROOT="${SEALER_TOOLCHAIN_CACHE:-$HOME/.cache/sealer-registry-toolchain}"

TOOL=""
VERSION=""
MODULE=""
TAGS=""
LDFLAGS=""
declare -a COMMANDS=()
declare -a BINARIES=()
BUILD_TMP=""
CHILD=""

info() { printf 'toolchain-%s: %s\n' "${TOOL:-gotool}" "$*" >&2; }
fatal() { printf 'toolchain-%s: error: %s\n' "${TOOL:-gotool}" "$*" >&2; exit 1; }
on_err() { printf 'toolchain-%s: failed at %s:%s: %s\n' "${TOOL:-gotool}" "${BASH_SOURCE[1]:-?}" "${BASH_LINENO[0]}" "$BASH_COMMAND" >&2; }
cleanup() {
  if [[ -n "$CHILD" ]]; then
    pkill -TERM -P "$CHILD" 2>/dev/null || true
    kill "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  if [[ -n "$BUILD_TMP" && -d "$BUILD_TMP" ]]; then rm -rf "$BUILD_TMP"; fi
}

# define_tool NAME: the pins and the build of one tool.
define_tool() {
  TOOL="$1"
  case "$TOOL" in
    containerd2)
      VERSION="2.2.9"
      MODULE="github.com/containerd/containerd/v2"
      TAGS="no_btrfs no_devmapper no_zfs"
      LDFLAGS="-s -w -X ${MODULE}/version.Version=v${VERSION}"
      COMMANDS=("${MODULE}/cmd/containerd@v${VERSION}" "${MODULE}/cmd/ctr@v${VERSION}")
      BINARIES=(containerd ctr)
      ;;
    versitygw)
      VERSION="1.8.0"
      MODULE="github.com/versity/versitygw"
      TAGS=""
      LDFLAGS="-s -w -X main.Version=v${VERSION}"
      COMMANDS=("${MODULE}/cmd/versitygw@v${VERSION}")
      BINARIES=(versitygw)
      ;;
    *) fatal "unknown tool '$TOOL' (containerd2 | versitygw)" ;;
  esac
}

cache_key() {
  local digest
  digest="$(printf '%s=%s tags=%s go=%s\n%s\n' "$TOOL" "$VERSION" "$TAGS" \
    "$(go env GOVERSION 2>/dev/null || echo unknown)" "$(sha256sum <"$SELF")" | sha256sum | cut -c1-16)"
  printf '%s-%s-%s\n' "$TOOL" "$VERSION" "$digest"
}

now_us() { printf '%s' "${EPOCHREALTIME/[.,]/}"; }
seconds_since() { local us=$(( $(now_us) - $1 )); printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000)); }

# check_version BIN: the built binary says the pinned version.
check_version() {
  local bin="$1"
  case "$TOOL" in
    containerd2) "$bin/containerd" --version | grep -q " v${VERSION}\b" ;;
    versitygw) "$bin/versitygw" --version | grep -q "v${VERSION}\b" ;;
  esac || fatal "the built ${BINARIES[0]} does not say v${VERSION}"
}

build() {
  local key="$1" target="$2" bin start name
  command -v go >/dev/null || fatal "go is not on PATH"
  BUILD_TMP="$(mktemp -d "$CACHE_ROOT/.${TOOL}build-${key}.XXXXXX")"
  bin="$BUILD_TMP/out/bin"
  mkdir -p "$bin"
  start="$(now_us)"
  info "building ${BINARIES[*]} v${VERSION} (GOMODCACHE=$(go env GOMODCACHE), GOCACHE=$(go env GOCACHE))"
  # In the background so that a TERM to this script reaches the compiler too.
  GOBIN="$bin" CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" go install -tags "$TAGS" \
    -ldflags "$LDFLAGS" "${COMMANDS[@]}" &
  CHILD=$!
  wait "$CHILD"
  CHILD=""
  check_version "$bin"
  {
    for name in "${BINARIES[@]}"; do printf '%s v%s\n' "$name" "$VERSION"; done
    printf 'go %s\ntags %s\n' "$(go env GOVERSION)" "$TAGS"
  } >"$bin/VERSIONS"
  : >"$BUILD_TMP/out/COMPLETE"
  if ! mv -T "$BUILD_TMP/out" "$target" 2>/dev/null; then
    [[ -f "$target/COMPLETE" ]] || fatal "could not move the build into $target"
    info "another build finished first; keeping it"
  fi
  info "built in $(seconds_since "$start") s"
}

main() {
  local command key target
  trap on_err ERR
  trap cleanup EXIT
  [[ $# -ge 1 ]] || fatal "usage: gotool.sh TOOL [build | bin-dir | version]"
  define_tool "$1"
  command="${2:-build}"
  key="$(cache_key)"
  target="$CACHE_ROOT/$key"
  case "$command" in
    version) printf '%s\n' "$VERSION" ;;
    bin-dir) printf '%s\n' "$target/bin" ;;
    build)
      mkdir -p "$CACHE_ROOT"
      exec 9>"$CACHE_ROOT/.lock-$TOOL"
      flock 9
      if [[ -f "$target/COMPLETE" ]]; then
        info "${TOOL} ${VERSION} cached at $target/bin"
      else
        rm -rf "$CACHE_ROOT/.${TOOL}build-"*
        build "$key" "$target"
      fi
      printf '%s\n' "$target/bin"
      ;;
    *) fatal "unknown command '$command' (build | bin-dir | version)" ;;
  esac
}

main "$@"
