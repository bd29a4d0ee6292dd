#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests use from outside
# Rust, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The end-to-end tests drive a real HTTP server (python3 -m http.server) and client (curl);
# the network-namespace tests (tests/network.rs) need `ip` and python3 for the link emulator.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
command -v ip >/dev/null || missing+=(iproute2)
# The fleet tests (tests/fleet.rs) start and stop a real Redis.
command -v redis-server >/dev/null || missing+=(redis-server)
# The hole-punching tests (tests/nat.rs) put host and client behind real kernel NAT (nftables).
command -v nft >/dev/null || missing+=(nftables)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test tools: ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# The ACME test (tests/cert.rs) runs a real local ACME server: Debian's pebble. Without it
# that test prints SKIPPED and passes.
if ! command -v pebble >/dev/null; then
  echo "installing the ACME test server: pebble"
  { apt-get update -qq && apt-get install -y -qq pebble; } || echo "pebble could not be installed: the ACME test will be SKIPPED"
fi

# The Kubernetes manifests (tests/k8s.rs) are checked offline against the API's JSON schemas
# by PyPI's kubernetes-validate, run as `python3 -m kubernetes_validate` (it brings PyYAML,
# with which the test reads them). Without kubectl that test prints SKIPPED; without the
# validator it fails, so it is installed here.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing the Kubernetes manifest validator: kubernetes-validate"
  python3 -m pip --version >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-pip; }
  # Debian's own python3 refuses system-wide installs (PEP 668); this is a test machine.
  export PIP_ROOT_USER_ACTION=ignore
  python3 -m pip install -q kubernetes-validate 2>/dev/null \
    || python3 -m pip install -q --break-system-packages kubernetes-validate
fi

cargo test --workspace "$@"
