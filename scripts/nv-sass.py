#!/usr/bin/env python3
"""Disassembles the megakernel as the NVIDIA driver compiled it (SASS), for profiling work.

The NVIDIA driver gives no machine code through Vulkan, but it keeps it in its shader disk
cache. Run megaring once with an empty cache directory, then point this script at it:

    export __GL_SHADER_DISK_CACHE_PATH=/tmp/glcache __GL_SHADER_DISK_CACHE_SKIP_CLEANUP=1
    megaring --workgroups 528 info
    python3 scripts/nv-sass.py /tmp/glcache/*.bin > megakernel.sass

Layout, as found with driver 580.159.04 on an H100 (not documented by NVIDIA): the `.bin`
file holds one zstd stream (found by its magic); its output has the code size and offset
as u32 words at 0x4C and 0x50, and the first instruction 8 bytes after that offset.
Needs the `zstd` command and `nvdisasm` (CUDA toolkit, or the PyPI wheel
`nvidia-cuda-nvdisasm`, which runs on a machine without a GPU). --arch picks the SM (SM90:
H100).
"""
import argparse
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def code_of(cache_file: pathlib.Path) -> bytes:
    data = cache_file.read_bytes()
    start = data.find(ZSTD_MAGIC)
    if start < 0:
        sys.exit(f"{cache_file}: no zstd stream (not an NVIDIA shader cache file?)")
    raw = subprocess.run(["zstd", "-dqc"], input=data[start:], capture_output=True, check=False).stdout
    if len(raw) < 0x54:
        sys.exit(f"{cache_file}: the zstd stream did not decompress")
    size, offset = struct.unpack_from("<II", raw, 0x4C)
    code = raw[offset + 8 : offset + size]
    if not code:
        sys.exit(f"{cache_file}: no code at offset {offset:#x} (size {size}); the layout may have changed")
    return code[: len(code) // 16 * 16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache_files", nargs="+", type=pathlib.Path)
    parser.add_argument("--arch", default="SM90")
    parser.add_argument("--nvdisasm", default=shutil.which("nvdisasm") or "/usr/local/cuda/bin/nvdisasm")
    args = parser.parse_args()
    for cache_file in args.cache_files:
        with tempfile.NamedTemporaryFile(suffix=".bin") as code:
            code.write(code_of(cache_file))
            code.flush()
            print(f"// {cache_file}", flush=True)
            subprocess.run([args.nvdisasm, "-b", args.arch, code.name], check=True)


if __name__ == "__main__":
    main()
