# shellcheck shell=bash
# containerd on this host, for the scripts that verify pulls or probe (common.sh comes first):
# does a daemon answer, and does its CRI plugin (what the kubelet pulls with) read certs.d.

CONTAINERD_CERTS_D=/etc/containerd/certs.d
# basefs' containerd config (context/containerd/rootfs/etc/dump-config.toml@main) points the CRI at
# docker's directory, where sealer and the program also put the registry's CA.
DOCKER_CERTS_D=/etc/docker/certs.d
CONTAINERD_DEFAULT_CONFIG=/etc/containerd/config.toml
# A probe that asks about containerd several ways (the hosts dir it reads, the state of its CRI)
# takes one snapshot first (containerd_snapshot): the daemons' pids and each config's dump, read
# once. While CONTAINERD_SNAPSHOT is 1 the functions below answer from it; a script that changes
# containerd never takes one.
CONTAINERD_SNAPSHOT=0
CONTAINERD_SNAPSHOT_PIDS=""
declare -gA CONTAINERD_SNAPSHOT_DUMPS=()

# The containerd client can reach a daemon on the default socket within a few seconds.
containerd_answers() {
  command -v ctr >/dev/null 2>&1 && timeout 5 ctr version >/dev/null 2>&1
}

# containerd daemons of this mount namespace: hosts that share a kernel (containers, the lab)
# see each other's processes. A pgrep without --ns (procps < 3.3.9) sees them all.
containerd_pids() {
  local rc=0
  if ((CONTAINERD_SNAPSHOT)); then
    [[ -z "$CONTAINERD_SNAPSHOT_PIDS" ]] || printf '%s\n' "$CONTAINERD_SNAPSHOT_PIDS"
    return 0
  fi
  pgrep --ns $$ --nslist mnt -x containerd 2>/dev/null || rc=$?
  if ((rc == 2)); then
    pgrep -x containerd || true
  fi
}

# The config file a daemon was started with (--config/-c), else containerd's default.
containerd_config_file() {
  local pid=$1 prev="" arg
  while IFS= read -r arg; do
    case "$prev" in --config | -c)
      printf '%s\n' "$arg"
      return 0
      ;;
    esac
    case "$arg" in --config=* | -c=*)
      printf '%s\n' "${arg#*=}"
      return 0
      ;;
    esac
    prev=$arg
  done < <(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null || true)
  printf '%s\n' "$CONTAINERD_DEFAULT_CONFIG"
}

# `containerd config dump` of a config file (its imports merged with every plugin's defaults),
# bounded by 10 s; from the snapshot when one was taken. Fails when the dump did.
containerd_config_dump() {
  local config=$1
  if ((CONTAINERD_SNAPSHOT)) && [[ -v "CONTAINERD_SNAPSHOT_DUMPS[$config]" ]]; then
    [[ -n "${CONTAINERD_SNAPSHOT_DUMPS[$config]}" ]] || return 1
    printf '%s\n' "${CONTAINERD_SNAPSHOT_DUMPS[$config]}"
    return 0
  fi
  timeout 10 containerd --config "$config" config dump 2>/dev/null
}

# Reads the daemons' pids and the dump of each config they use (the default config when none
# runs) once, for the rest of this script: on a host whose PID namespace is shared (the lab, a
# host with many containers) each pgrep walks every process of the machine.
containerd_snapshot() {
  local pids pid config configs dump
  pids=$(containerd_pids)
  CONTAINERD_SNAPSHOT_DUMPS=()
  if command -v containerd >/dev/null 2>&1; then
    configs=$CONTAINERD_DEFAULT_CONFIG
    if [[ -n "$pids" ]]; then
      configs=$(for pid in $pids; do containerd_config_file "$pid"; done)
    fi
    while IFS= read -r config; do
      [[ -n "$config" && ! -v "CONTAINERD_SNAPSHOT_DUMPS[$config]" ]] || continue
      dump=$(timeout 10 containerd --config "$config" config dump 2>/dev/null) || dump=""
      CONTAINERD_SNAPSHOT_DUMPS[$config]=$dump
    done <<<"$configs"
  fi
  CONTAINERD_SNAPSHOT_PIDS=$pids
  CONTAINERD_SNAPSHOT=1
}

# From `containerd config dump` (the config file and its imports merged with every plugin's
# defaults): "cri=on|off", "config_path=<value>", "socket=<grpc address>" and one "import=<file>"
# per imported file. containerd 1.x dumps version 2 with "double" quotes; 2.x dumps version 3 with
# 'single' quotes and the registry under the CRI images plugin
# ([plugins.'io.containerd.cri.v1.images'.registry]): section names are read without quotes.
# 1.x lists the config file itself in `imports`, 2.x does not (it lists its default
# '/etc/containerd/conf.d/*.toml' there): the file is named as an import either way.
containerd_dump_facts() {
  local config=$1
  containerd_config_dump "$config" | awk -v self="$config" '
    /^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]"\047]/, "", section) }
    section == "[plugins.io.containerd.grpc.v1.cri]" { cri = 1 }
    section == "" && $1 == "imports" {
      line = $0; sub(/^[^[]*\[/, "", line); sub(/\].*$/, "", line)
      n = split(line, parts, ",")
      for (i = 1; i <= n; i++) { f = parts[i]; gsub(/["\047 ]/, "", f); if (f != "") print "import=" f }
    }
    section == "[grpc]" && $1 == "address" {
      value = $0; sub(/^[^=]*=[[:space:]]*/, "", value); gsub(/["\047]/, "", value); print "socket=" value
    }
    (section == "[plugins.io.containerd.grpc.v1.cri.registry]" ||
     section == "[plugins.io.containerd.cri.v1.images.registry]") && $1 == "config_path" {
      value = $0; sub(/^[^=]*=[[:space:]]*/, "", value); gsub(/["\047]/, "", value); path = value
    }
    END { print "import=" self; print "cri=" (cri ? "on" : "off"); print "config_path=" path }
  '
}

# Whether a config file changed after the daemon started (then the daemon runs an older config):
# newer than the socket the daemon made when it started. Both are file times from the same
# clock (a process's age from `ps` and `date` disagree after a clock step).
changed_since_start() {
  local socket=$1 file=$2
  [[ -S "$socket" && -f "$file" && -n "$(find "$file" -newer "$socket" 2>/dev/null)" ]]
}

# One word on whether the containerd that serves the CRI on this host reads $CONTAINERD_CERTS_D:
#   certs.d    its CRI plugin's config_path holds it, and its config is not newer than the daemon
#   docker-certs.d  config_path is $DOCKER_CERTS_D (sealer's basefs nodes): the CA is found there;
#              containerd's hosts.toml (mirrors) under $CONTAINERD_CERTS_D is not read
#   unset      config_path is empty: the CRI plugin ignores certs.d (pulls through the domain fail x509)
#   elsewhere:<path>  config_path names other directories
#   stale      a config file changed after the daemon started: it may run another config (restart it)
#   no-cri     containerd runs without a CRI plugin (docker's): the kubelet pulls another way
#   down       containerd is installed but no daemon runs
#   unknown    `containerd config dump` failed
#   -          no containerd on this host
containerd_certs_d_state() {
  local pids pid facts="" path part found=0 file
  pids=$(containerd_pids)
  if [[ -z "$pids" ]]; then
    if command -v containerd >/dev/null 2>&1; then echo down; else echo -; fi
    return 0
  fi
  if ! command -v containerd >/dev/null 2>&1; then
    echo unknown
    return 0
  fi
  for pid in $pids; do
    facts=$(containerd_dump_facts "$(containerd_config_file "$pid")") || true
    [[ -n "$facts" ]] || continue
    found=1
    while IFS= read -r file; do
      if changed_since_start "$(sed -n 's/^socket=//p' <<<"$facts")" "${file#import=}"; then
        echo stale
        return 0
      fi
    done < <(grep '^import=' <<<"$facts" || true)
    grep -qx 'cri=on' <<<"$facts" && break
    facts=""
  done
  if [[ -z "$facts" ]]; then
    if ((found)); then echo no-cri; else echo unknown; fi
    return 0
  fi
  path=$(sed -n 's/^config_path=//p' <<<"$facts")
  if [[ -z "$path" ]]; then
    echo unset
    return 0
  fi
  for part in ${path//:/ }; do
    if [[ "${part%/}" == "$CONTAINERD_CERTS_D" ]]; then
      echo certs.d
      return 0
    fi
  done
  for part in ${path//:/ }; do
    if [[ "${part%/}" == "$DOCKER_CERTS_D" ]]; then
      echo docker-certs.d
      return 0
    fi
  done
  echo "elsewhere:$path"
}
