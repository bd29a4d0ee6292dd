#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests use from outside
# Rust, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The end-to-end tests drive a real HTTP server (python3 -m http.server) and client (curl).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test tools: ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

cargo test --workspace "$@"
