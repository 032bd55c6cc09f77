#!/usr/bin/env python3
"""Checks `megaring scan` against Python over a directory tree: CRC-32 (zlib) and newline
counts (as `wc -l`) of every regular file.

Usage: check-scan.py MEGARING DIR [EXTRA MEGARING OPTIONS...]
Prints how many files matched and exits 1 on any mismatch or failed file.
"""
import json, os, subprocess, sys, zlib

megaring, root, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
bad = 0
for program, compute in (("crc32", zlib.crc32), ("lines", lambda data: data.count(b"\n"))):
    out = subprocess.run([megaring, *extra, "scan", "-r", root, "-p", program, "--json"],
                         capture_output=True, check=False)
    report = json.loads(out.stdout)
    equal = 0
    for row in report["files"]:
        try:
            with open(row["path"], "rb") as f:
                want = compute(f.read())
        except OSError:
            continue
        if row.get("result") == want:
            equal += 1
        else:
            bad += 1
            print(f"{program}: {row['path']}: megaring {row.get('result', row.get('error'))}, python {want}")
    print(f"{program}: {equal} of {len(report['files'])} files equal, {report['bytes']} bytes, "
          f"{report['gb_per_s']:.2f} GB/s, failed {report['failed']}; {report['ingest']}")
sys.exit(1 if bad else 0)
