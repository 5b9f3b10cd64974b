# shellcheck shell=bash
# Where this node's containerd reads its registry host configs (`<dir>/<domain>:<port>/hosts.toml`
# and the CA files it names): the CRI registry `config_path` of the config its daemon really uses
# (common.sh and containerd.sh come first). sealer's basefs sets `config_path =
# "/etc/docker/certs.d/"` (context/containerd/rootfs/etc/dump-config.toml@main), so there
# hosts.toml goes beside docker's trust; containerd's own and the lab's is /etc/containerd/certs.d.
# config_path may list several directories separated by `:`; containerd looks for a host's
# directory in each in turn, and we write into the first.

CONTAINERD_HOSTS_DIR_DEFAULT=/etc/containerd/certs.d

# The CRI registry config_path of a containerd config on stdin (a config file, or the output of
# `containerd config dump`): table [plugins."io.containerd.grpc.v1.cri".registry] (config version
# 2, containerd 1.x; [plugins.cri.registry] in a version 1 file) or
# [plugins."io.containerd.cri.v1.images".registry] (version 3, 2.x), quotes
# and blanks of the table name ignored. Prints nothing when unset.
config_path_in_toml() {
  awk '
    /^[[:space:]]*\[/ {
      section = $0; sub(/#.*/, "", section); gsub(/[[:space:]"\047]/, "", section); next
    }
    (section == "[plugins.io.containerd.grpc.v1.cri.registry]" || section == "[plugins.cri.registry]" ||
     section == "[plugins.io.containerd.cri.v1.images.registry]") &&
      $0 ~ /^[[:space:]]*config_path[[:space:]]*=/ {
      value = $0; sub(/^[^=]*=[[:space:]]*/, "", value); sub(/[[:space:]]*(#.*)?$/, "", value)
      gsub(/^["\047]|["\047]$/, "", value); print value; exit
    }'
}

# The config files of the containerd daemons of this mount namespace (each one's --config, else
# the default file); the default file when none runs.
containerd_configs_in_use() {
  local pid found=0
  for pid in $(containerd_pids); do
    containerd_config_file "$pid"
    found=1
  done
  ((found)) || printf '%s\n' "$CONTAINERD_DEFAULT_CONFIG"
}

# Prints the directory this node's containerd reads hosts.toml from: the first entry of the first
# config_path set in the configs in use, read from `containerd config dump` (imports merged) when
# containerd is installed, else from the file itself; /etc/containerd/certs.d when none sets one.
# Trailing slashes are dropped (basefs writes "/etc/docker/certs.d/").
containerd_hosts_dir() {
  local config dump path=""
  while IFS= read -r config; do
    if command -v containerd >/dev/null 2>&1 &&
      dump=$(containerd_config_dump "$config") && [[ -n "$dump" ]]; then
      path=$(config_path_in_toml <<<"$dump")
    elif [[ -r "$config" ]]; then
      path=$(config_path_in_toml <"$config")
    fi
    path=${path%%:*}
    while [[ "$path" == */ && "$path" != / ]]; do path=${path%/}; done
    [[ -z "$path" ]] || break
  done < <(containerd_configs_in_use)
  printf '%s\n' "${path:-$CONTAINERD_HOSTS_DIR_DEFAULT}"
}
