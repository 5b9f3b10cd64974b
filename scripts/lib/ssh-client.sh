# shellcheck shell=bash
# The ssh command line of the scripts that run on the machine that runs `pulumi up` and log in
# to a host (sync-data.sh, fill-from-store.sh). The caller sets:
#   WORK           its private temp dir (0700, removed on exit)
#   KEY_FILE       the cluster's private key file ("" = ssh's own identities / password)
#   PASSWORD_FILE  the host's password in a 0600 file ("" = key login)
#   HOST_KEY       the host's pinned public key line ("" = not pinned)
#   JUMP           USER@HOST:PORT of a jump host ("")
#   SUDO           "sudo -n" when the login user is not root ("")

# A remote command line, as root: through `sudo -n bash -c` when the user is not root.
as_root() {
  if [[ -n "$SUDO" ]]; then
    printf '%s bash -c %q' "$SUDO" "$1"
  else
    printf '%s' "$1"
  fi
}

# ssh asks the askpass helper for the password (SSH_ASKPASS_REQUIRE=force: also without a
# terminal); the helper prints the password file.
use_askpass() {
  printf '#!/bin/sh\nexec cat %q\n' "$PASSWORD_FILE" >"$WORK/askpass"
  chmod 0700 "$WORK/askpass"
  export SSH_ASKPASS="$WORK/askpass" SSH_ASKPASS_REQUIRE=force
}

# The ssh argv for HOST PORT, one word per line.
ssh_command() {
  local host=$1 port=$2
  local cmd=(ssh -p "$port" -o ConnectTimeout=5
    -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -c aes128-gcm@openssh.com)
  if [[ -n "$PASSWORD_FILE" ]]; then
    cmd+=(-o BatchMode=no -o "PreferredAuthentications=keyboard-interactive,password"
      -o NumberOfPasswordPrompts=1 -o PubkeyAuthentication=no)
  else
    cmd+=(-o BatchMode=yes)
  fi
  [[ -z "$KEY_FILE" ]] || cmd+=(-i "$KEY_FILE" -o IdentitiesOnly=yes)
  if [[ -n "$HOST_KEY" ]]; then
    printf '%s %s\n' "$([[ "$port" == 22 ]] && echo "$host" || echo "[$host]:$port")" "$HOST_KEY" >"$WORK/known_hosts"
    cmd+=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$WORK/known_hosts")
  else
    cmd+=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
  fi
  [[ -z "$JUMP" ]] || cmd+=(-J "$JUMP")
  printf '%s\n' "${cmd[@]}"
}
