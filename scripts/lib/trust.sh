# shellcheck shell=bash
# Which file of a certs.d directory holds a registry's CA (common.sh comes first). sealer installs
# its CA as certs.d/<domain>:<port>/<domain>.crt (pkg/registry/local.go@v0.11.0:239-253), the
# program as ca.crt: a directory that already trusts the certificate under any *.crt name keeps
# that file, and nothing is added beside it.

# sha256 of a PEM file without blank lines and carriage returns (cli/probe.py hashes the configured
# CA the same way), so a trailing newline or CRLF line ends do not count as another certificate.
pem_digest() {
  { grep -v '^[[:space:]]*$' "$1" || true; } | tr -d '\r' | sha256sum | cut -d' ' -f1
}

# Prints the *.crt of DIR whose pem_digest is DIGEST (ca.crt first), or fails.
trust_file_with_digest() {
  local dir=$1 digest=$2 file
  for file in "$dir/ca.crt" "$dir"/*.crt; do
    [[ -f "$file" ]] || continue
    if [[ "$(pem_digest "$file")" == "$digest" ]]; then
      printf '%s\n' "$file"
      return 0
    fi
  done
  return 1
}

# Prints the *.crt of DIR that holds the certificate of PEM file WANT, or fails.
trust_file_in() {
  trust_file_with_digest "$1" "$(pem_digest "$2")"
}
