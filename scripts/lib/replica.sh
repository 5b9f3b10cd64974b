# shellcheck shell=bash
# The replica stamp `<rootfs>/registry/.sealer-replica`: one JSON line written only after a
# complete, verified copy (or on the host that is the source: "source": "self"; in sealer's HA
# layout, after a master pulled every other live master's data: "source": "union", the tree it
# holds then), removed before a copy starts writing. `watch` and `status` read it; "complete" =
# the file exists and parses.
#   {"source": "<ip>|self|union", "completed_at": <unix s>, "files": <n>, "bytes": <n>,
#    "tree": "<sha256 of the sorted 'relative-path size' lines of the source's v2 tree>"}
# sync-data.sh sends these functions to the host with `declare -f`: keep them self-contained.

# The 'relative-path size' lines of a registry's distribution tree (docker/registry/v2), sorted
# bytewise. Left out: rsync's partial dirs, its temp files (".<name>.XXXXXX", written by a copy
# INTO this host that may run while another host copies FROM it) and uploads in progress (the
# registry drops those). No file of distribution's layout starts with a dot (repository names,
# tags and digests start with an alphanumeric character).
tree_list() {
  local v2=$1/docker/registry/v2
  [[ -d "$v2" ]] || return 0
  (cd "$v2" && find . -type f ! -path '*/.~tmp~/*' ! -name '.*' ! -path '*/_uploads/*' -printf '%P %s\n') |
    LC_ALL=C sort
}

# The sha256 of the 'relative-path content' lines of a registry's tag heads
# (repositories/<name>/_manifests/tags/<tag>/current/link), sorted bytewise; "none" without
# any. Every other file of distribution's layout is named by its content (blobs by digest, the
# layer, revision and tag-index links by the digest they hold), so two trees with the same
# tree_list and the same tag heads serve the same thing; a tag moved back to a digest it had
# before keeps the listing and changes only its head.
tag_heads() {
  local v2=$1/docker/registry/v2
  [[ -d "$v2/repositories" ]] || { echo none; return 0; }
  (cd "$v2" && find repositories -path '*/_manifests/tags/*/current/link' -type f -printf '%p ' -exec cat {} \; -printf '\n') |
    LC_ALL=C sort | sha256sum | cut -d' ' -f1
}

# write_stamp REGISTRY SOURCE LIST: the stamp of the tree LIST describes (tree_list's lines),
# atomically (temp file + rename in the same directory).
write_stamp() {
  local registry=$1 source=$2 list=$3 files bytes tree
  files=$(wc -l <"$list")
  # %.0f: mawk's %d stops at 2^31, a registry is tens of GiB
  bytes=$(awk '{ s += $NF } END { printf "%.0f", s }' "$list")
  tree=$(sha256sum <"$list" | cut -d' ' -f1)
  printf '{"source": "%s", "completed_at": %s, "files": %s, "bytes": %s, "tree": "%s"}\n' \
    "$source" "$(date +%s)" "$((files))" "${bytes:-0}" "$tree" >"$registry/.sealer-replica.new"
  mv -f "$registry/.sealer-replica.new" "$registry/.sealer-replica"
}

# Whether REGISTRY holds a complete replica: its stamp exists and parses.
stamp_complete() {
  grep -Eq '^\{"source": "[^"]+", "completed_at": [0-9]+, "files": [0-9]+, "bytes": [0-9]+, "tree": "[0-9a-f]{64}"\}$' \
    "$1/.sealer-replica" 2>/dev/null
}
