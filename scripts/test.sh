#!/usr/bin/env bash
# The test command of the README: installs what is missing, then runs every test on the
# machine's Vulkan device (lavapipe where no GPU exists), under the validation layer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo test --locked "$@"
