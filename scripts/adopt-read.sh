#!/usr/bin/env bash
# Reads what sealer left on master0 and prints it as one tar on stdout (for `python -m cli adopt`);
# changes nothing on the host. The tar holds:
#   meta                 key=value lines: clusterfile, history, rootfs (the paths read)
#   clusterfile          sealer's Clusterfile
#   application.json     the boot history, when there is one
#   rootfs/certs/...     every file of <rootfs>/certs (sealer's cert and key)
#   rootfs/etc/registry_config.yml, rootfs/etc/registry_htpasswd, rootfs/etc/registry.yml
#                        when they exist (registry.yml: sealer v0.8's settings file)
#   flags                `<mtime> <name>` per file of <rootfs>/cache/registry (sealer's flag per
#                        image whose registry data reached the host; the names are image ids)
#   cm/NAME              with --kubectl: the ConfigMap kube-system/NAME's data key (NAME
#                        sealer-clusterfile: key Clusterfile; sealer-registry: key registry), read
#                        with master0's kubectl and admin.conf; meta `cm.NAME=found|absent|error`
#   files/N              the Nth --file (default: every `pk:` path of the Clusterfile, the SSH
#                        keys sealer reaches the hosts with), when readable
# Without --rootfs the rootfs is <dataRoot>/<name>/rootfs of the Clusterfile's Cluster document,
# read with awk (sigs.k8s.io/yaml's layout); the caller parses the Clusterfile properly and runs
# this again with --rootfs when it finds another one.
# With --node DOMAIN (run on a node, not master0) the tar holds only what shows sealer's registry
# mode there: node/hosts (the /etc/hosts lines naming DOMAIN) and node/reg-lvscare.yaml (sealer's
# static pod keeping the HA registry's VIP, pkg/registry/local.go@v0.11.0:148-237), when present.
# Usage: adopt-read.sh [--clusterfile PATH] [--history PATH] [--rootfs DIR] [--kubectl]
#                      [--file PATH]...
#        adopt-read.sh --node DOMAIN
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
fi
if ! declare -F listener_pid >/dev/null; then
  # shellcheck source=lib/registry.sh
  source "${BASH_SOURCE[0]%/*}/lib/registry.sh"
fi

readonly DEFAULT_DATA_ROOT=/var/lib/sealer/data
readonly ADMIN_CONF=/etc/kubernetes/admin.conf
readonly LVSCARE_MANIFEST=/etc/kubernetes/manifests/reg-lvscare.yaml
STAGE=""
cleanup() { [[ -z "$STAGE" ]] || rm -rf "$STAGE"; }

# sealer keeps ~/.sealer/Clusterfile of the user that ran it (root); sealer before v0.9 kept
# ~/.sealer/<cluster>/Clusterfile.
find_clusterfile() {
  local home candidates=()
  for home in /root "${HOME:-/root}"; do
    if [[ -f "$home/.sealer/Clusterfile" ]]; then
      printf '%s\n' "$home/.sealer/Clusterfile"
      return 0
    fi
  done
  shopt -s nullglob
  candidates=(/root/.sealer/*/Clusterfile)
  shopt -u nullglob
  if ((${#candidates[@]} == 1)); then
    printf '%s\n' "${candidates[0]}"
    return 0
  fi
  ((${#candidates[@]} == 0)) || fatal "several Clusterfiles: ${candidates[*]}; name one with --clusterfile"
  fatal "no Clusterfile in /root/.sealer or ${HOME:-/root}/.sealer; name it with --clusterfile"
}

# "<name>\t<dataRoot>" of the first `kind: Cluster` document (top-level keys at column 0, their
# children indented by two spaces).
cluster_name_and_root() {
  awk '
    function value(line) {
      sub(/^[^:]*:[ \t]*/, "", line); sub(/[ \t]+#.*$/, "", line); sub(/[ \t]+$/, "", line)
      gsub(/^["\047]|["\047]$/, "", line)
      return line
    }
    function flush() {
      if (kind == "Cluster" && !done) { print name "\t" root; done = 1 }
      kind = ""; name = ""; root = ""; top = ""
    }
    /^---/ { flush(); next }
    /^[A-Za-z]/ { top = $0; sub(/:.*/, "", top); if (top == "kind") kind = value($0); next }
    top == "metadata" && /^  name:/ { name = value($0) }
    top == "spec" && /^  dataRoot:/ { root = value($0) }
    END { flush() }
  ' "$1"
}

# Every `pk:` value of the Clusterfile (spec.ssh and the hosts' overrides).
key_paths() {
  awk '/^[ \t-]*pk:[ \t]*[^ \t]/ {
    line = $0; sub(/^[^:]*:[ \t]*/, "", line); sub(/[ \t]+#.*$/, "", line); sub(/[ \t]+$/, "", line)
    gsub(/^["\047]|["\047]$/, "", line); print line
  }' "$1" | sort -u
}

# One ConfigMap's data key into $STAGE/cm/NAME; prints found, absent or error.
read_configmap() {
  local name=$1 key=$2 out
  if ! command -v kubectl >/dev/null 2>&1 || [[ ! -f "$ADMIN_CONF" ]]; then
    printf 'error\n'
    return 0
  fi
  mkdir -p "$STAGE/cm"
  if ! out=$(kubectl --kubeconfig "$ADMIN_CONF" --request-timeout=10s get configmap -n kube-system \
      "$name" --ignore-not-found -o "jsonpath={.data.$key}" 2>/dev/null); then
    printf 'error\n'
  elif [[ -z "$out" ]]; then
    printf 'absent\n'
  else
    printf '%s' "$out" >"$STAGE/cm/$name"
    printf 'found\n'
  fi
}

# sealer's flag files, `<mtime> <name>` (their order is the order the images were run).
registry_flags() {
  local dir=$1/cache/registry
  [[ -d "$dir" ]] || return 0
  find "$dir" -mindepth 1 -maxdepth 1 -type f -printf '%T@ %f\n'
}

# The port sealer v0.8's settings file names (a string there: `port: "5000"`), else 5000.
settings_port() {
  local port=""
  [[ -f "$1" ]] && port=$(awk -F': *' '$1 == "port" { gsub(/["\047 ]/, "", $2); print $2 }' "$1")
  [[ "$port" =~ ^[0-9]+$ ]] || port=5000
  printf '%s\n' "$port"
}

# With no etc/registry_config.yml (sealer v0.8: basefs' sealer-v0.8.6 rootfs has none), sealer's
# init-registry.sh runs the registry image's own config. The config the running registry reads is
# in its root: adopting exactly that lets the first `up` keep the registry running.
running_config() {
  local port=$1 pid
  pid=$(listener_pid "$port") || return 0
  [[ -n "$pid" && -f "/proc/$pid/root/etc/docker/registry/config.yml" ]] || return 0
  cat "/proc/$pid/root/etc/docker/registry/config.yml"
}

copy_if_file() {
  local src=$1 dest=$2
  [[ -f "$src" ]] || return 0
  mkdir -p "$(dirname "$dest")"
  cp "$src" "$dest"
}

read_node() {
  local domain=$1
  STAGE=$(mktemp -d)
  trap cleanup EXIT
  mkdir -p "$STAGE/node"
  # Field match, not a regex: the domain's dots are literal.
  awk -v d="$domain" '$1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == d) { print; next } }' \
    /etc/hosts >"$STAGE/node/hosts"
  copy_if_file "$LVSCARE_MANIFEST" "$STAGE/node/reg-lvscare.yaml"
  info "read /etc/hosts and $LVSCARE_MANIFEST"
  tar -C "$STAGE" -cf - .
}

main() {
  if [[ "${1:-}" == --node ]]; then
    (($# == 2)) || fatal "usage: --node DOMAIN"
    read_node "$2"
    return 0
  fi
  local clusterfile="" history="" rootfs="" kubectl=false files=() found name root i
  while (($#)); do
    case "$1" in
      --clusterfile) clusterfile=$2; shift 2 ;;
      --history) history=$2; shift 2 ;;
      --rootfs) rootfs=$2; shift 2 ;;
      --kubectl) kubectl=true; shift ;;
      --file) files+=("$2"); shift 2 ;;
      *) fatal "unknown argument '$1'" ;;
    esac
  done
  [[ -n "$clusterfile" ]] || clusterfile=$(find_clusterfile)
  [[ -f "$clusterfile" ]] || fatal "no Clusterfile at $clusterfile"
  [[ -n "$history" ]] || history="$(dirname "$clusterfile")/application.json"
  ((${#files[@]})) || mapfile -t files < <(key_paths "$clusterfile")
  if [[ -z "$rootfs" ]]; then
    found=$(cluster_name_and_root "$clusterfile")
    name=${found%%$'\t'*}
    root=${found#*$'\t'}
    [[ -n "$name" ]] || fatal "$clusterfile has no kind: Cluster document with metadata.name"
    rootfs="${root:-$DEFAULT_DATA_ROOT}/$name/rootfs"
  fi

  STAGE=$(mktemp -d)
  trap cleanup EXIT
  cp "$clusterfile" "$STAGE/clusterfile"
  copy_if_file "$history" "$STAGE/application.json"
  if [[ -d "$rootfs/certs" ]]; then
    mkdir -p "$STAGE/rootfs"
    cp -R "$rootfs/certs" "$STAGE/rootfs/certs"
  fi
  copy_if_file "$rootfs/etc/registry_config.yml" "$STAGE/rootfs/etc/registry_config.yml"
  copy_if_file "$rootfs/etc/registry_htpasswd" "$STAGE/rootfs/etc/registry_htpasswd"
  copy_if_file "$rootfs/etc/registry.yml" "$STAGE/rootfs/etc/registry.yml"
  if [[ ! -f "$rootfs/etc/registry_config.yml" ]]; then
    mkdir -p "$STAGE/running"
    running_config "$(settings_port "$rootfs/etc/registry.yml")" >"$STAGE/running/config.yml"
    [[ -s "$STAGE/running/config.yml" ]] || rm -f "$STAGE/running/config.yml"
  fi
  registry_flags "$rootfs" >"$STAGE/flags"
  {
    printf 'clusterfile=%s\nhistory=%s\nrootfs=%s\n' "$clusterfile" "$history" "$rootfs"
    if [[ "$kubectl" == true ]]; then
      printf 'cm.sealer-clusterfile=%s\n' "$(read_configmap sealer-clusterfile Clusterfile)"
      printf 'cm.sealer-registry=%s\n' "$(read_configmap sealer-registry registry)"
    fi
    for i in "${!files[@]}"; do
      printf 'file.%s=%s\n' "$i" "${files[$i]}"
      copy_if_file "${files[$i]}" "$STAGE/files/$i"
    done
  } >"$STAGE/meta"
  info "read $clusterfile and $rootfs"
  tar -C "$STAGE" -cf - .
}

main "$@"
