#!/bin/sh
# The relay pod's first init container (busybox sh): writes what the relay reads into the
# in-memory volume /run/ferry-relay, which the relay mounts read-only.
#
# - relay.toml: the ConfigMap's relay.toml, then the Secret's tokens.toml (the relay reads
#   one file; TOML lets [[access.token]] tables follow the other sections), then fleet.toml
#   when FERRY_FLEET=on.
# - tls/cert.pem, tls/key.pem and fleet-secret: copies of the Secrets with mode 0600. The
#   relay refuses a key that others can read, and a Secret volume is group-readable once the
#   pod sets fsGroup (and root-owned without it).
#
# The tests run this script (tests/k8s.rs) with FERRY_PREPARE_SRC and FERRY_PREPARE_OUT
# pointing into a temporary directory.
set -eu
umask 077
src="${FERRY_PREPARE_SRC:-/etc/ferry-relay}"
out="${FERRY_PREPARE_OUT:-/run/ferry-relay}"

fail() {
  echo "prepare: $*" >&2
  exit 1
}

for file in "$src/config/relay.toml" "$src/tls/tls.crt" "$src/tls/tls.key"; do
  [ -s "$file" ] || fail "$file is missing or empty (deploy/k8s/README.md, 'Create the Secrets')"
done
# May be empty: an open fleet has no tokens.
[ -f "$src/secret/tokens.toml" ] || fail "$src/secret/tokens.toml is missing (deploy/k8s/README.md, 'Create the Secrets')"

mkdir -p "$out/tls"
cat "$src/tls/tls.crt" > "$out/tls/cert.pem"
cat "$src/tls/tls.key" > "$out/tls/key.pem"

{
  cat "$src/config/relay.toml"
  printf '\n# --- tokens.toml (Secret ferry-relay-secrets) ---\n'
  cat "$src/secret/tokens.toml"
} > "$out/relay.toml.tmp"

if [ "${FERRY_FLEET:-off}" = on ]; then
  secret="$src/secret/fleet-secret"
  [ -s "$secret" ] || fail "$secret is missing or empty"
  # The placeholder in base/secrets/fleet-secret is public: a fleet keyed with it is open to anyone.
  if grep -q REPLACE "$secret"; then
    fail "the fleet secret is still the placeholder of deploy/k8s/base/secrets (deploy/k8s/README.md, 'Create the Secrets')"
  fi
  [ "$(wc -c < "$secret")" -ge 32 ] || fail "the fleet secret is shorter than 32 bytes"
  cat "$secret" > "$out/fleet-secret"
  {
    printf '\n# --- fleet.toml (ConfigMap ferry-relay-config) ---\n'
    cat "$src/config/fleet.toml"
  } >> "$out/relay.toml.tmp"
fi

# The relay never sees half a file, should this container run again in the same pod.
mv "$out/relay.toml.tmp" "$out/relay.toml"
echo "prepare: wrote $out/relay.toml (fleet: ${FERRY_FLEET:-off})"
