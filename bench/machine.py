"""The machine a benchmark ran on, in one line for its results."""

import os
import platform
import time
from pathlib import Path


def machine() -> str:
    """The CPU, its widest vector instructions, cores, Python and the date. Smart-turn's int8
    inference depends on the vector instructions: 19 ms on an earlier machine of the same name,
    ~50 ms on one with AVX2 alone (where plain Python also ran ~2.5× slower)."""
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    vector = next((name for flag, name in [("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2")]
                   if flag in flags), "no AVX2")
    return f"{cpu} ({vector}), {os.cpu_count()} cores, CPython {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
