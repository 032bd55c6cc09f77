#!/usr/bin/env bash
# Installs what megaring needs on Debian 12 / Ubuntu: the Vulkan loader and headers,
# lavapipe (Mesa's CPU Vulkan driver, used where no GPU exists), the Khronos validation
# layer (the tests run under it), and what shaderc's from-source build needs (cmake,
# ninja, python3, a C++ compiler). Rust itself must already be installed (rustup).
set -euo pipefail
packages=(mesa-vulkan-drivers libvulkan1 libvulkan-dev vulkan-validationlayers vulkan-tools
          cmake ninja-build python3 g++ git pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust 1.80 or newer with rustup (https://rustup.rs), then re-run" >&2
  exit 1
fi
