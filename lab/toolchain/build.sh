#!/usr/bin/env bash
# Builds the engine toolchain the e2e tier runs against, from the Go module proxy only:
#   pulumi (CLI), pulumi-language-python-exec + pulumi-resource-pulumi-python (scripts shipped in the
#   sdk module), pulumi-resource-kubernetes, kube-apiserver, kube-controller-manager, etcd.
# Not built, because the proxy refuses their modules (403): pulumi-language-python (programs run from
# a work_dir need it; inline Automation API programs do not) and pulumi-resource-command.
# Output: ${SEALER_TOOLCHAIN_CACHE:-$HOME/.cache/sealer-registry-toolchain}/<key>/bin, where <key>
# covers the versions and every file of lab/toolchain that goes into a build. A complete key dir is
# reused as is; a build happens in a temp dir that is renamed into place only when it is complete.
#
# Usage: build.sh [build]   build unless cached, then print the bin dir on the last line
#        build.sh key       print the cache key
#        build.sh bin-dir   print the bin dir (built or not)
set -euo pipefail

# Versions. The wrapper go.mod files pin the same ones; check_pins() fails if they drift apart.
readonly PULUMI_VERSION="3.274.0"
readonly KUBERNETES_PROVIDER_MODULE="github.com/pulumi/pulumi-kubernetes/provider/v4"
readonly KUBERNETES_PROVIDER_VERSION="4.0.0-20260115033456-f47bc2d6f199"
readonly KUBE_VERSION="1.37.2"
readonly ETCD_VERSION="3.7.0"

TOOLCHAIN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly TOOLCHAIN_DIR
readonly CACHE_ROOT="${SEALER_TOOLCHAIN_CACHE:-$HOME/.cache/sealer-registry-toolchain}"

BUILD_TMP=""
CHILD=""
declare -a REPORT=()

info() { printf 'toolchain: %s\n' "$*" >&2; }
fatal() { printf 'toolchain: error: %s\n' "$*" >&2; exit 1; }
on_err() { printf 'toolchain: failed at %s:%s: %s\n' "${BASH_SOURCE[1]:-?}" "${BASH_LINENO[0]}" "$BASH_COMMAND" >&2; }
cleanup() {
  if [[ -n "$CHILD" ]]; then
    pkill -TERM -P "$CHILD" 2>/dev/null || true
    kill "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  if [[ -n "$BUILD_TMP" && -d "$BUILD_TMP" ]]; then rm -rf "$BUILD_TMP"; fi
}

# Files whose content decides what gets built, in a fixed order.
key_inputs() {
  (cd "$TOOLCHAIN_DIR" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) \
    -not -name '*-embed.json' -print | LC_ALL=C sort)
}

cache_key() {
  local digest
  digest="$(
    cd "$TOOLCHAIN_DIR"
    printf 'pulumi=%s kubernetes=%s kube=%s etcd=%s go=%s\n' "$PULUMI_VERSION" \
      "$KUBERNETES_PROVIDER_VERSION" "$KUBE_VERSION" "$ETCD_VERSION" "$(go env GOVERSION 2>/dev/null || echo unknown)"
    key_inputs | while IFS= read -r file; do sha256sum "$file"; done
  )"
  printf 'pulumi-%s-kube-%s-%s\n' "$PULUMI_VERSION" "$KUBE_VERSION" "$(printf '%s' "$digest" | sha256sum | cut -c1-16)"
}

# Fails when a wrapper go.mod pins another version than the constants above say.
check_pins() {
  grep -q "github.com/pulumi/pulumi/pkg/v3 v${PULUMI_VERSION}\b" "$TOOLCHAIN_DIR/pulumi/go.mod" \
    || fatal "pulumi/go.mod does not pin pkg/v3 v${PULUMI_VERSION}"
  grep -q "github.com/pulumi/pulumi/sdk/v3 v${PULUMI_VERSION}\b" "$TOOLCHAIN_DIR/pulumi/go.mod" \
    || fatal "pulumi/go.mod does not pin sdk/v3 v${PULUMI_VERSION}"
  grep -q "${KUBERNETES_PROVIDER_MODULE} v${KUBERNETES_PROVIDER_VERSION}\b" "$TOOLCHAIN_DIR/kubernetes/go.mod" \
    || fatal "kubernetes/go.mod does not pin ${KUBERNETES_PROVIDER_MODULE} v${KUBERNETES_PROVIDER_VERSION}"
  grep -q "k8s.io/api => k8s.io/api v0.${KUBE_VERSION#1.}\b" "$TOOLCHAIN_DIR/kube/go.mod" \
    || fatal "kube/go.mod does not replace the staging modules with v0.${KUBE_VERSION#1.}"
  grep -q "k8s.io/kubernetes v${KUBE_VERSION}\b" "$TOOLCHAIN_DIR/kube/go.mod" \
    || fatal "kube/go.mod does not pin k8s.io/kubernetes v${KUBE_VERSION}"
  grep -q "go.etcd.io/etcd/server/v3 v${ETCD_VERSION}\b" "$TOOLCHAIN_DIR/kube/go.mod" \
    || fatal "kube/go.mod does not pin go.etcd.io/etcd/server/v3 v${ETCD_VERSION}"
}

# module_dir DIR MODULE: the module's source dir in the module cache, downloaded first when the cache
# does not hold it yet (`go list -m -f {{.Dir}}` prints an empty Dir for a module it has not got).
module_dir() {
  local dir="$1" module="$2" found
  found="$(cd "$dir" && go mod download -json "$module" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Dir", ""))')"
  [[ -n "$found" && -d "$found" ]] || fatal "go mod download gave no source dir for $module (in $dir)"
  printf '%s\n' "$found"
}

now_us() { printf '%s' "${EPOCHREALTIME/[.,]/}"; }
seconds_since() { local us=$(( $(now_us) - $1 )); printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000)); }

# timed NAME CMD...: runs CMD and records how long it took.
timed() {
  local name="$1" start
  shift
  info "building ${name}"
  start="$(now_us)"
  # In the background so that a TERM to this script reaches the compiler too (cleanup kills it).
  "$@" &
  CHILD=$!
  wait "$CHILD"
  CHILD=""
  REPORT+=("$(printf '%-34s %6s s' "$name" "$(seconds_since "$start")")")
}

build_pulumi() {
  local bin="$1"
  go build -C "$TOOLCHAIN_DIR/pulumi" -o "$bin/pulumi" \
    -ldflags="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v${PULUMI_VERSION}" \
    github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
}

# The Python exec shim and the dynamic-provider script ship as plain files in the sdk module.
install_python_scripts() {
  local bin="$1" sdk
  sdk="$(module_dir "$TOOLCHAIN_DIR/pulumi" github.com/pulumi/pulumi/sdk/v3)"
  [[ -n "$sdk" && -d "$sdk/python" ]] || fatal "sdk/v3 module has no python/ tree (${sdk:-not downloaded})"
  install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$bin/pulumi-language-python-exec"
  install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$bin/pulumi-resource-pulumi-python"
}

# Upstream's main embeds generated copies of schema.json and terraform-mapping.json; make them in a
# scratch copy of the wrapper module (never in the clone), stamping the schema with the version.
build_kubernetes_provider() {
  local bin="$1" src provider_src
  src="$BUILD_TMP/src-kubernetes"
  cp -R "$TOOLCHAIN_DIR/kubernetes" "$src"
  provider_src="$(module_dir "$src" "$KUBERNETES_PROVIDER_MODULE")"
  [[ -f "$provider_src/cmd/pulumi-resource-kubernetes/schema.json" ]] \
    || fatal "provider module at $provider_src has no cmd/pulumi-resource-kubernetes/schema.json"
  python3 - "$provider_src/cmd/pulumi-resource-kubernetes" "$src" "$KUBERNETES_PROVIDER_VERSION" <<'PY'
import json, pathlib, sys
source, target, version = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
schema = json.loads((source / "schema.json").read_text())
schema["version"] = version
(target / "schema-embed.json").write_text(json.dumps(schema, separators=(",", ":")))
mapping = json.loads((source / "terraform-mapping.json").read_text())
(target / "terraform-mapping-embed.json").write_text(json.dumps(mapping, separators=(",", ":")))
PY
  go build -C "$src" -o "$bin/pulumi-resource-kubernetes" \
    -ldflags="-s -w -X ${KUBERNETES_PROVIDER_MODULE}/pkg/version.Version=${KUBERNETES_PROVIDER_VERSION}" .
}

# build_kube NAME: a k8s.io/kubernetes command, stamped with its version (clients check it).
build_kube() {
  local bin="$1" name="$2" v="k8s.io/component-base/version"
  go build -C "$TOOLCHAIN_DIR/kube" -o "$bin/$name" \
    -ldflags="-s -w -X ${v}.gitVersion=v${KUBE_VERSION} -X ${v}.gitMajor=${KUBE_VERSION%%.*} -X ${v}.gitMinor=$(cut -d. -f2 <<<"$KUBE_VERSION") -X ${v}.gitTreeState=clean" \
    "k8s.io/kubernetes/cmd/$name"
}

build_etcd() {
  local bin="$1"
  go build -C "$TOOLCHAIN_DIR/kube" -o "$bin/etcd" -ldflags="-s -w" ./etcd
}

write_manifest() {
  local bin="$1"
  {
    printf 'pulumi v%s\n' "$PULUMI_VERSION"
    printf 'pulumi-resource-kubernetes %s\n' "$KUBERNETES_PROVIDER_VERSION"
    printf 'kube-apiserver v%s\n' "$KUBE_VERSION"
    printf 'kube-controller-manager v%s\n' "$KUBE_VERSION"
    printf 'etcd v%s\n' "$ETCD_VERSION"
    printf 'go %s\n' "$(go env GOVERSION)"
  } >"$bin/VERSIONS"
}

build_all() {
  local key="$1" target="$2" bin total_start
  command -v go >/dev/null || fatal "go is not on PATH"
  check_pins
  mkdir -p "$CACHE_ROOT"
  BUILD_TMP="$(mktemp -d "$CACHE_ROOT/.build-${key}.XXXXXX")"
  bin="$BUILD_TMP/out/bin"
  mkdir -p "$bin"
  export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
  total_start="$(now_us)"
  timed "pulumi v${PULUMI_VERSION}" build_pulumi "$bin"
  timed "python exec + dynamic scripts" install_python_scripts "$bin"
  timed "pulumi-resource-kubernetes" build_kubernetes_provider "$bin"
  timed "kube-apiserver v${KUBE_VERSION}" build_kube "$bin" kube-apiserver
  # Its garbage collector removes the foregroundDeletion finalizer pulumi-kubernetes deletes with.
  timed "kube-controller-manager v${KUBE_VERSION}" build_kube "$bin" kube-controller-manager
  timed "etcd v${ETCD_VERSION}" build_etcd "$bin"
  write_manifest "$bin"
  "$bin/pulumi" version >/dev/null || fatal "the built pulumi does not run"
  : >"$BUILD_TMP/out/COMPLETE"
  # rename(2) of a directory is atomic: the key dir appears complete or not at all.
  if ! mv -T "$BUILD_TMP/out" "$target" 2>/dev/null; then
    [[ -f "$target/COMPLETE" ]] || fatal "could not move the build into $target"
    info "another build finished first; keeping it"
  fi
  info "built in $(seconds_since "$total_start") s:"
  printf '  %s\n' "${REPORT[@]}" >&2
  (cd "$target/bin" && du -sh -- * | sed 's/^/  /' >&2)
}

# Keeps the newest KEEP key dirs (each is ~0.7 GB) and drops leftovers of interrupted builds; runs
# under the lock, so no build is in progress.
prune_cache() {
  local keep=2 dir
  rm -rf "$CACHE_ROOT"/.build-*
  while IFS= read -r dir; do
    info "removing old toolchain $dir"
    rm -rf "$dir"
  done < <(find "$CACHE_ROOT" -mindepth 1 -maxdepth 1 -type d -name 'pulumi-*' -printf '%T@ %p\n' \
    | sort -rn | tail -n +$((keep + 1)) | cut -d' ' -f2-)
}

main() {
  local command="${1:-build}" key target
  trap on_err ERR
  trap cleanup EXIT
  key="$(cache_key)"
  target="$CACHE_ROOT/$key"
  case "$command" in
    key) printf '%s\n' "$key" ;;
    bin-dir) printf '%s\n' "$target/bin" ;;
    build)
      mkdir -p "$CACHE_ROOT"
      exec 9>"$CACHE_ROOT/.lock"
      flock 9
      if [[ -f "$target/COMPLETE" ]]; then
        info "toolchain cached at $target/bin"
      else
        rm -rf "$CACHE_ROOT"/.build-*
        build_all "$key" "$target"
        prune_cache
        info "toolchain built at $target/bin"
      fi
      printf '%s\n' "$target/bin"
      ;;
    *) fatal "unknown command '$command' (build | key | bin-dir)" ;;
  esac
}

main "$@"
