"""Plain step functions the SLURM integration tests run through the real runtime."""

from __future__ import annotations

import time


def nap(seconds: float) -> float:
    print(f"napping {seconds}", flush=True)
    time.sleep(seconds)
    print("woke up", flush=True)
    return seconds


def count_lines(lines: int) -> int:
    for number in range(lines):
        print(f"line {number}", flush=True)
        time.sleep(0.05)
    return lines


def hog_memory(megabytes: int, seconds: float) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    for index in range(0, len(block), 4096):
        block[index] = 1  # touch every page so it counts as resident
    time.sleep(seconds)
    return len(block)


def interpreter_prefix() -> str:
    import sys

    return sys.prefix
