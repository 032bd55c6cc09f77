#!/usr/bin/env bash
# The main job of the README: installs what is missing, then shows the device and runtime
# (`megaring info`), scans this checkout's sources through the zero-copy ingest path
# (`megaring scan`: CRC-32 of each file, computed by the GPU where io_uring landed it) and
# measures the ring against vkQueueSubmit + fence (`bench latency`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo run --locked --bin megaring -- info
cargo run --locked --bin megaring -- scan -p crc32 -r src glsl
cargo run --locked --bin megaring -- bench latency "$@"
