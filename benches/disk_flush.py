#!/usr/bin/env python3
"""How long this disk takes to make a small write durable: the floor under every commit.

Each durable redb commit ends in one fdatasync, so no acknowledgement can come faster than
this. Writes 300 random 4 KiB blocks into a 64 MiB scratch file, each followed by
fdatasync, for three ways the file's blocks can exist (a hole left by ftruncate, as redb
grows its file; fallocated; already written), plus rewriting one block and a flush with
nothing dirty. Bounded (a few seconds), removes its file.

Run: python3 benches/disk_flush.py [DIR]   (DIR: where the data dir will live; default .)
"""

import os
import sys
import tempfile
import time

SIZE = 64 << 20
BLOCK = 4096
ROUNDS = 300


def percentiles(samples):
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1e3
    return f"p50 {pick(0.5):.2f} ms  p90 {pick(0.9):.2f} ms  max {samples[-1] * 1e3:.2f} ms"


def timed(fd, write):
    samples = []
    for i in range(ROUNDS):
        started = time.perf_counter()
        write(i)
        os.fdatasync(fd)
        samples.append(time.perf_counter() - started)
    return samples


def main():
    where = sys.argv[1] if len(sys.argv) > 1 else "."
    block = os.urandom(BLOCK)
    zeros = bytes(1 << 20)
    prepare = {
        "hole (ftruncate)": lambda fd: os.ftruncate(fd, SIZE),
        "fallocated": lambda fd: os.posix_fallocate(fd, 0, SIZE),
        "already written": lambda fd: [os.pwrite(fd, zeros, o) for o in range(0, SIZE, len(zeros))],
    }
    for name, setup in prepare.items():
        fd, path = tempfile.mkstemp(dir=where, prefix=".indaba-flush-")
        try:
            setup(fd)
            os.fsync(fd)
            spread = lambda i: os.pwrite(fd, block, (i * 7919 * BLOCK) % SIZE)
            print(f"4 KiB write + fdatasync, {name:17} {percentiles(timed(fd, spread))}")
            if name == "already written":
                same = lambda i: os.pwrite(fd, block, 0)
                print(f"4 KiB write + fdatasync, {'same block':17} {percentiles(timed(fd, same))}")
                idle = lambda i: None
                print(f"fdatasync, nothing dirty          {percentiles(timed(fd, idle))}")
        finally:
            os.close(fd)
            os.unlink(path)


if __name__ == "__main__":
    main()
