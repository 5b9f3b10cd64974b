#!/usr/bin/env bash
# Fills this deploy host's registry data (<rootfs>/registry/docker) from another cluster host,
# host to host: rsync over SSH run here, the source only reads. The machine running `pulumi` only
# sends this script. Incremental (unchanged files are not sent), atomic (--delay-updates: files
# arrive under .~tmp~ and are renamed into place together at the end), verified (every blob
# received is hashed here against its name, and every file the source listed is here with its
# size), never deleting (no --delete: an empty or wrong source cannot wipe a replica).
# The replica stamp (lib/replica.sh) is removed before the copy writes and written after it is
# verified; an interrupted copy leaves .sealer-replica.run behind, so it is never taken for data.
# The stale gate (--replica only): <registry>/.sealer-stale is created before the copy starts and
# removed only after the stamp is written; not created when the replica already serves what the
# source does (same tree list and tag heads: a recovery's rerun against the new master0). A warm standby's read-only registry answers 503 on
# every route while it exists (distribution's file health check, material/registry_config.py), so
# a replica that lags master0 serves no tag, and an interrupted copy keeps it out of service until
# a copy completes. --master0 and --union remove it: master0 and HA masters never gate themselves.
# Usage: pull-data.sh --replica|--master0|--union ROOTFS [--generation G] [--data-generation D]
#                     [--source IP PORT USER HOST_KEY|-]...
#   --replica: copy from the first source (master0), which must hold a complete stamp.
#   --master0: this host is the source: keep its own data when its stamp is complete (or it holds
#     data no copy of ours ever touched: sealer's); else copy from the first source holding a
#     complete stamp. Then write the stamp "self".
#   --union (sealer's HA layout: every master serves its own registry): pull from EVERY source
#     what this host lacks, so that it holds the union of all the masters' trees. No stamp is
#     needed on a source; --update: a file this host holds newer than the source's is kept (a tag
#     pushed to two masters: the newest push wins, by mtime); no --delete. Each source's listed
#     files must be here afterwards (blobs with their size). Then the stamp "union".
#   --generation: what the program knows of the source's content (a digest of the image-store
#     images master0 gets); unused here, a change only makes the engine run the step again.
#   --data-generation: the program's probe of the source's tree (scripts/probe-trees.sh); written
#     to <registry>/.sealer-generation after the stamp, so the next probe knows this host holds
#     what the step synced to (an unchanged tree keeps the generation: nothing to diff).
# After a verified copy the source's <rootfs>/cache/registry/<id> flags this host lacks are added
# (sealer's "this image's registry data reached this host"); none is ever removed.
# stdin: credentials, one per line (never argv or the environment): "key <base64 private key>",
#   "password <ip> <base64 password>" (a source with a password logs in with it; the key, when
#   there is one too, is offered first).
if ! declare -F info >/dev/null; then
  # shellcheck source=lib/common.sh
  source "${BASH_SOURCE[0]%/*}/lib/common.sh"
  # shellcheck source=lib/replica.sh
  source "${BASH_SOURCE[0]%/*}/lib/replica.sh"
fi

WORK=""
RUN_MARK=.sealer-replica.run
STALE_MARK=.sealer-stale
# copy_tree's rsync options, first on its command line: end_stale_copies finds an interrupted
# copy's rsync by them, so the two cannot drift apart.
RSYNC_OPTS=(-a --omit-dir-times --delay-updates)
MODE=""

cleanup() { [[ -z "$WORK" ]] || rm -rf "$WORK"; }

# Credentials from stdin into 0600 files of the private temp dir.
read_credentials() {
  local kind a b
  while read -r kind a b; do
    case "$kind" in
      key) (umask 077 && printf '%s' "$a" | base64 -d >"$WORK/id") ;;
      password) (umask 077 && printf '%s' "$b" | base64 -d >"$WORK/password-$a") ;;
      "") ;;
      *) fatal "unknown credential line on stdin: $kind" ;;
    esac
  done
}

# ssh command for a source (one argument per line); exports the askpass helper when the source
# logs in with a password (SSH_ASKPASS_REQUIRE=force: also without a terminal).
ssh_command() {
  local ip=$1 port=$2 host_key=$3
  local cmd=(ssh -p "$port" -o ConnectTimeout=5 -o ServerAliveInterval=5 -o ServerAliveCountMax=3
    -c aes128-gcm@openssh.com -F /dev/null)
  if [[ -f "$WORK/password-$ip" ]]; then
    printf '#!/bin/sh\nexec cat %q\n' "$WORK/password-$ip" >"$WORK/askpass-$ip"
    chmod 0700 "$WORK/askpass-$ip"
    # The key first when there is one, as sealer tries both: a stale password must not lock us out.
    if [[ -f "$WORK/id" ]]; then
      cmd+=(-i "$WORK/id" -o IdentitiesOnly=yes
        -o "PreferredAuthentications=publickey,keyboard-interactive,password")
    else
      cmd+=(-o "PreferredAuthentications=keyboard-interactive,password" -o PubkeyAuthentication=no)
    fi
    cmd+=(-o BatchMode=no -o NumberOfPasswordPrompts=1)
  else
    [[ -f "$WORK/id" ]] || fatal "no SSH key or password on stdin for $ip"
    cmd+=(-o BatchMode=yes -i "$WORK/id" -o IdentitiesOnly=yes)
  fi
  if [[ "$host_key" != - ]]; then
    printf '%s %s\n' "$([[ "$port" == 22 ]] && echo "$ip" || echo "[$ip]:$port")" "$host_key" >"$WORK/known_hosts-$ip"
    cmd+=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$WORK/known_hosts-$ip")
  else
    cmd+=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
  fi
  printf '%s\n' "${cmd[@]}"
}

use_askpass_for() {
  if [[ -f "$WORK/askpass-$1" ]]; then
    export SSH_ASKPASS="$WORK/askpass-$1" SSH_ASKPASS_REQUIRE=force
  else
    unset SSH_ASKPASS SSH_ASKPASS_REQUIRE
  fi
}

# End an rsync of ours that an interrupted earlier run left writing into this registry (its
# session is dead: this step is the replica's only writer). Only processes that see this mount
# namespace: hosts sharing a kernel (containers, the lab) keep theirs. Wait until they are gone
# (5 s, then SIGKILL): a receiver's cleanup on SIGTERM writes its partial file under .~tmp~.
end_stale_copies() {
  local registry=$1 pattern i
  command -v pkill >/dev/null || { warn "no pkill: cannot end an interrupted copy's rsync"; return 0; }
  pattern="^rsync ${RSYNC_OPTS[*]} .* [^ ]+:$registry/docker $registry/\$"
  pgrep --ns $$ --nslist mnt -f "$pattern" >/dev/null || return 0
  pkill --ns $$ --nslist mnt -f "$pattern" || true
  for i in $(seq 50); do
    if ! pgrep --ns $$ --nslist mnt -f "$pattern" >/dev/null; then
      info "ended the rsync of an interrupted copy (after ${i}x0.1 s)"
      return 0
    fi
    sleep 0.1
  done
  pkill --signal KILL --ns $$ --nslist mnt -f "$pattern" || true
  info "ended the rsync of an interrupted copy (SIGKILL after 5 s)"
}

# The source's stamp, its cache/registry flags ("ID@MTIME ..." on one line), its tag heads
# (lib/replica.sh tag_heads), then its tree list, in one session.
read_source() {
  local registry=$1 user=$2 ip=$3 out=$4 prefix=""
  shift 4
  [[ "$user" == root ]] || prefix="sudo -n "
  "$@" "$user@$ip" "${prefix}bash -s" >"$out" <<REMOTE
$(declare -f tree_list tag_heads)
cat $(printf '%q' "$registry/.sealer-replica") 2>/dev/null || echo none
find $(printf '%q' "${registry%/registry}/cache/registry") -maxdepth 1 -type f -regextype egrep \
  -regex '.*/[0-9a-f]{64}' -printf '%f@%T@ ' 2>/dev/null || true; echo
tag_heads $(printf '%q' "$registry")
tree_list $(printf '%q' "$registry")
REMOTE
}

# Adds the flags of IDS_FILE ("ID@MTIME ..." line) this host lacks, with the source's mtime.
copy_flags() {
  local registry=$1 ids_file=$2 ip=$3 cache entries entry id mtime added=0
  cache=${registry%/registry}/cache/registry
  read -r -a entries <"$ids_file" || true
  for entry in "${entries[@]}"; do
    id=${entry%%@*} mtime=${entry#*@}
    [[ "$id" =~ ^[0-9a-f]{64}$ ]] || continue
    [[ ! -e "$cache/$id" ]] || continue
    mkdir -p "$cache" || fatal "cannot create $cache"
    install -m 0644 /dev/null "$cache/$id.sealer-new" || fatal "cannot write in $cache"
    if [[ "$mtime" =~ ^[0-9]+ ]]; then touch -d "@${BASH_REMATCH[0]}" "$cache/$id.sealer-new"; fi
    mv -f "$cache/$id.sealer-new" "$cache/$id" || fatal "cannot write the flag $cache/$id"
    added=$((added + 1))
  done
  info "cache/registry flags from $ip: $added added"
}

# Blobs of RECEIVED (rsync's out-format paths) hashed against their names; ends the script on a
# mismatch.
verify_blobs() {
  local registry=$1 received=$2 ip=$3 h
  grep -E '/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data$' "$received" >"$WORK/blobs" || true
  info "$(wc -l <"$received") paths received from $ip, $(wc -l <"$WORK/blobs") blobs; verifying them"
  # openssl hashes ~5x faster than sha256sum with SHA extensions; one hasher per core, 16
  # paths each, so each writes its lines in one atomic pipe write.
  if command -v openssl >/dev/null; then h="openssl dgst -sha256 -r"; else h=sha256sum; fi
  # shellcheck disable=SC2086 # $h is a command and its flags
  (cd "$registry" && xargs -r -d '\n' -P "$(nproc)" -n 16 $h <"$WORK/blobs") |
    awk '{ sub(/^\*/, "", $2); n = split($2, p, "/"); if (p[n - 1] != $1) { print "corrupt blob: " $2; bad++ } }
         END { exit bad > 0 }' >&2 || fatal "blob verification failed: a blob received from $ip does not match its digest"
}

# copy_tree REGISTRY IP USER SSH_CMD... [--update]: rsync IP's docker tree into this host's
# (received paths in $WORK/received). The source may be writing meanwhile (a push, or in the HA
# union another master copying INTO it): its rsync temp files and partial dirs (every name that
# starts with a dot; distribution's layout has none) are not sent, and a file that vanished
# between rsync's listing and its read (exit 24) is not an error here: the caller checks every
# path of the source's listing afterwards. Directory times are not kept (--omit-dir-times): in
# the union the masters copy into each other side by side, so a directory's time depends on the
# order of the copies, and a rerun would retouch directories that hold nothing new.
copy_tree() {
  local registry=$1 ip=$2 user=$3 extra=() rsync_path=() code=0
  shift 3
  if [[ "${*: -1}" == --update ]]; then extra=(--update); set -- "${@:1:$#-1}"; fi
  [[ "$user" == root ]] || rsync_path=(--rsync-path="sudo -n rsync")
  rsync "${RSYNC_OPTS[@]}" "${extra[@]}" --exclude=_uploads/ --exclude='.*' --out-format='%n' \
    -e "$(printf '%q ' "$@")" "${rsync_path[@]}" "$user@$ip:$registry/docker" "$registry/" \
    >"$WORK/received" </dev/null || code=$?
  if ((code == 24)); then
    warn "files vanished on $ip during the copy (rsync exit 24); checking its listing"
    code=0
  fi
  return "$code"
}

# Whether this host's registry serves what the source read by read_source does: the same
# tree_list lines and the same tag heads (every other file is named by its content).
serves_as_source() {
  local registry=$1
  [[ "$(tag_heads "$registry")" == "$(cat "$WORK/source-heads")" ]] || return 1
  tree_list "$registry" >"$WORK/before" || return 1
  cmp -s "$WORK/before" "$WORK/list"
}

# pull_from REGISTRY IP PORT USER HOST_KEY: copy and verify; on success the stamp names IP (the
# caller may rewrite it as self). Returns 3 when the source holds no complete replica, 4 when it
# cannot be read, 5 when the copy failed; a verification failure ends the script. Called in an
# `||` list, where bash ignores `set -e`: every step checks its own status.
pull_from() {
  local registry=$1 ip=$2 port=$3 user=$4 host_key=$5 ssh_cmd token
  mapfile -t ssh_cmd < <(ssh_command "$ip" "$port" "$host_key")
  use_askpass_for "$ip"  # after ssh_command wrote the helper
  read_source "$registry" "$user" "$ip" "$WORK/source" "${ssh_cmd[@]}" </dev/null ||
    { warn "cannot read $ip's registry over SSH"; return 4; }
  head -1 "$WORK/source" >"$WORK/source-stamp" && sed -n 2p "$WORK/source" >"$WORK/source-ids" &&
    sed -n 3p "$WORK/source" >"$WORK/source-heads" && tail -n +4 "$WORK/source" >"$WORK/list" || return 4
  mkdir -p "$WORK/src" && cp "$WORK/source-stamp" "$WORK/src/.sealer-replica" || return 4
  stamp_complete "$WORK/src" || { info "$ip holds no complete replica (stamp: $(cat "$WORK/source-stamp"))"; return 3; }
  info "copying from $ip: $(wc -l <"$WORK/list") files"
  token="$$-$(date +%s%N)-$RANDOM"
  if [[ "$MODE" == --replica ]]; then
    if serves_as_source "$registry"; then
      # A recovery reruns every standby's step against the new master0: one already holding
      # its tree stays in service (the gate would take the node's only serving standby out
      # while the promoted one restarts). An earlier run's gate, if any, stays until the stamp.
      info "in sync with $ip (same tree and tag heads): no stale gate, the copy only checks"
    else
      : >"$registry/$STALE_MARK" || fatal "cannot write the stale marker $registry/$STALE_MARK"
      info "stale gate on ($registry/$STALE_MARK): a warm standby serves nothing until the copy completes"
    fi
  fi
  { rm -f "$registry/.sealer-replica" && printf '%s\n' "$token" >"$registry/$RUN_MARK"; } ||
    fatal "cannot write in $registry"
  end_stale_copies "$registry"
  copy_tree "$registry" "$ip" "$user" "${ssh_cmd[@]}" || { warn "the copy from $ip failed (exit $?)"; return 5; }
  # Partial files an interrupted copy kept under .~tmp~ are never renamed into place now.
  find "$registry/docker" -depth -type d -name .~tmp~ -exec rm -rf {} + ||
    fatal "cannot remove the partial files under $registry/docker"
  verify_blobs "$registry" "$WORK/received" "$ip"
  { tree_list "$registry" >"$WORK/have" && LC_ALL=C comm -23 "$WORK/list" "$WORK/have" >"$WORK/missing"; } ||
    fatal "cannot list $registry"
  [[ ! -s "$WORK/missing" ]] ||
    fatal "$(wc -l <"$WORK/missing") files of $ip's tree are not here with their size (first: $(head -1 "$WORK/missing"))"
  [[ "$(cat "$registry/$RUN_MARK" 2>/dev/null || true)" == "$token" ]] ||
    fatal "another copy into $registry started meanwhile; not writing the stamp"
  { write_stamp "$registry" "$ip" "$WORK/list" && rm -f "$registry/$RUN_MARK"; } ||
    fatal "cannot write the stamp in $registry"
  info "replica complete from $ip: $(cat "$registry/.sealer-replica")"
  if [[ -e "$registry/$STALE_MARK" ]]; then
    rm -f "$registry/$STALE_MARK" || fatal "cannot remove the stale marker $registry/$STALE_MARK"
    info "stale gate off: the replica is complete"
  fi
  copy_flags "$registry" "$WORK/source-ids" "$ip"
}

# union_from REGISTRY IP PORT USER HOST_KEY: what IP holds and this host lacks (--update: this
# host's newer files are kept), verified; the flags too. Ends the script on any failure.
union_from() {
  local registry=$1 ip=$2 port=$3 user=$4 host_key=$5 ssh_cmd
  mapfile -t ssh_cmd < <(ssh_command "$ip" "$port" "$host_key")
  use_askpass_for "$ip"
  read_source "$registry" "$user" "$ip" "$WORK/source" "${ssh_cmd[@]}" </dev/null ||
    fatal "cannot read $ip's registry over SSH (every live master is a source of the union)"
  { sed -n 2p "$WORK/source" >"$WORK/source-ids" && tail -n +4 "$WORK/source" >"$WORK/list"; } ||
    fatal "cannot read $ip's answer"
  info "union: $ip lists $(wc -l <"$WORK/list") files"
  if [[ ! -s "$WORK/list" ]]; then
    # Nothing to copy (a master without data may not even have the docker dir rsync would read).
    copy_flags "$registry" "$WORK/source-ids" "$ip"
    return 0
  fi
  copy_tree "$registry" "$ip" "$user" "${ssh_cmd[@]}" --update || fatal "the copy from $ip failed (exit $?)"
  find "$registry/docker" -depth -type d -name .~tmp~ -exec rm -rf {} + ||
    fatal "cannot remove the partial files under $registry/docker"
  verify_blobs "$registry" "$WORK/received" "$ip"
  # Every path the source listed is here; a blob (named by its digest) with its size. A tag's
  # link file this host holds newer may differ from the source's: --update kept ours.
  tree_list "$registry" >"$WORK/have" || fatal "cannot list $registry"
  awk 'NR == FNR { have[$1] = $2; next }
       !($1 in have) || ($1 ~ /^blobs\// && have[$1] != $2) { print; bad++ }
       END { exit bad > 0 }' "$WORK/have" "$WORK/list" >"$WORK/missing" ||
    fatal "$(wc -l <"$WORK/missing") files of $ip's tree are not here (first: $(head -1 "$WORK/missing"))"
  copy_flags "$registry" "$WORK/source-ids" "$ip"
}

union_main() {
  local registry=$1 token
  shift
  token="$$-$(date +%s%N)-$RANDOM"
  { rm -f "$registry/.sealer-replica" && printf '%s\n' "$token" >"$registry/$RUN_MARK"; } ||
    fatal "cannot write in $registry"
  end_stale_copies "$registry"
  find "$registry/docker" -depth -type d -name .~tmp~ -exec rm -rf {} + 2>/dev/null || true
  while (($#)); do
    [[ "$1" == --source && $# -ge 5 ]] || fatal "bad source arguments: $*"
    union_from "$registry" "$2" "$3" "$4" "$5"
    shift 5
  done
  [[ "$(cat "$registry/$RUN_MARK" 2>/dev/null || true)" == "$token" ]] ||
    fatal "another copy into $registry started meanwhile; not writing the stamp"
  tree_list "$registry" >"$WORK/self" || fatal "cannot list $registry"
  { write_stamp "$registry" union "$WORK/self" && rm -f "$registry/$RUN_MARK"; } ||
    fatal "cannot write the stamp in $registry"
  info "union complete: $(cat "$registry/.sealer-replica")"
}

# The probe's generation, after the stamp (scripts/probe-trees.sh reads it back), and the tree
# this host holds now on stdout (the stack output data_tree reads master0's).
finish() {
  local registry=$1 generation=$2
  if [[ -n "$generation" ]]; then
    { printf '%s\n' "$generation" >"$registry/.sealer-generation.new" &&
      mv -f "$registry/.sealer-generation.new" "$registry/.sealer-generation"; } ||
      fatal "cannot write $registry/.sealer-generation"
  fi
  echo "tree $(sed -n 's/.*"tree": "\([0-9a-f]\{64\}\)".*/\1/p' "$registry/.sealer-replica")"
}

# Data on this host that no copy of ours left unfinished (sealer's own registry, or a store push).
holds_own_data() {
  local registry=$1
  [[ ! -e "$registry/$RUN_MARK" && -d "$registry/docker/registry/v2" ]] &&
    [[ -n "$(find "$registry/docker/registry/v2" -type f -print -quit)" ]]
}

stamp_self() {
  local registry=$1
  tree_list "$registry" >"$WORK/self"
  write_stamp "$registry" self "$WORK/self"
  info "source stamp: $(cat "$registry/.sealer-replica")"
}

main() {
  local mode=$1 rootfs=$2 registry tried=() rc generation=""
  shift 2
  [[ "$mode" == --replica || "$mode" == --master0 || "$mode" == --union ]] ||
    fatal "first argument: --replica, --master0 or --union, not $mode"
  MODE=$mode
  WORK=$(mktemp -d)
  trap cleanup EXIT
  read_credentials
  registry=$rootfs/registry
  mkdir -p "$registry"
  if [[ "$mode" != --replica && -e "$registry/$STALE_MARK" ]]; then
    rm -f "$registry/$STALE_MARK" || fatal "cannot remove $registry/$STALE_MARK"
    info "removed the stale marker: this host serves its own data ($mode)"
  fi
  if [[ "${1:-}" == --generation ]]; then
    info "source generation $2"
    shift 2
  fi
  if [[ "${1:-}" == --data-generation ]]; then
    generation=$2
    [[ "$generation" =~ ^[A-Za-z0-9._:-]{1,200}$ ]] || fatal "bad --data-generation: $generation"
    shift 2
  fi
  if [[ "$mode" == --union ]]; then
    union_main "$registry" "$@"
    finish "$registry" "$generation"
    return 0
  fi
  if [[ "$mode" == --master0 ]]; then
    if stamp_complete "$registry" || holds_own_data "$registry"; then
      info "this host holds the data ($(stamp_complete "$registry" && echo "complete stamp" || echo "own data, no stamp")); copying nothing"
      end_stale_copies "$registry"
      find "$registry/docker" -depth -type d -name .~tmp~ -exec rm -rf {} + 2>/dev/null || true
      stamp_self "$registry"
      finish "$registry" "$generation"
      return 0
    fi
    tried+=("this host (no complete stamp$([[ -e "$registry/$RUN_MARK" ]] && echo ", an interrupted copy"))")
  fi
  while (($#)); do
    [[ "$1" == --source && $# -ge 5 ]] || fatal "bad source arguments: $*"
    rc=0
    pull_from "$registry" "$2" "$3" "$4" "$5" || rc=$?
    if ((rc == 0)); then
      [[ "$mode" == --replica ]] || stamp_self "$registry"
      finish "$registry" "$generation"
      return 0
    fi
    case $rc in
      3) tried+=("$2 (no complete replica)") ;;
      4) tried+=("$2 (unreachable)") ;;
      *) tried+=("$2 (copy failed)") ;;
    esac
    [[ "$mode" == --master0 ]] || break
    shift 5
  done
  fatal "no source holds the registry data; tried: ${tried[*]:-no source}"
}

main "$@"
