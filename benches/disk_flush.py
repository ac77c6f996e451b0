#!/usr/bin/env python3
"""How long this disk takes to make a small write durable: the floor under every commit.

Each durable redb commit ends in one fdatasync, so no acknowledgement can come faster than
this. Writes 300 random 4 KiB blocks into a 64 MiB scratch file, each followed by
fdatasync, for three ways the file's blocks can exist (a hole left by ftruncate, as redb
grows its file; fallocated; already written), plus rewriting one block and a flush with
nothing dirty.

Then the shape of a real commit: a redb commit of one small batch writes 13-16 pages at
scattered offsets (counted with `perf trace -s` on the writer thread: 13.6 `pwrite`s per
one-message commit in the store bench, 16.3 per commit in the 5,000 msg/s open loop) and
then syncs once. 2,000 rounds of 16 pages written one by one at scattered offsets +
fdatasync, against the same 16 writes at adjacent offsets (what an append-only log would
write), with p99 and max. The scattered offsets span the whole 64 MiB file, so they are a
harsher spread than redb's allocator (which reuses nearby pages) usually makes. Bounded
(about 10 s), removes its file.

Run: python3 benches/disk_flush.py [DIR]   (DIR: where the data dir will live; default .)
"""

import os
import sys
import tempfile
import time

SIZE = 64 << 20
BLOCK = 4096
ROUNDS = 300


COMMIT_PAGES = 16
COMMIT_ROUNDS = 2000


def percentiles(samples, tail=False):
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1e3
    quantiles = [("p50", 0.5), ("p99", 0.99)] if tail else [("p50", 0.5), ("p90", 0.9)]
    shown = "  ".join(f"{label} {pick(q):.2f} ms" for label, q in quantiles)
    return f"{shown}  max {samples[-1] * 1e3:.2f} ms"


def timed(fd, write, rounds=ROUNDS):
    samples = []
    for i in range(rounds):
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
                pages = SIZE // BLOCK

                def scattered(i):
                    for j in range(COMMIT_PAGES):
                        page = ((i * COMMIT_PAGES + j) * 7919) % pages
                        os.pwrite(fd, block, page * BLOCK)

                def contiguous(i):
                    # The same 16 writes, at adjacent offsets.
                    first = (i * COMMIT_PAGES) % (pages - COMMIT_PAGES)
                    for j in range(COMMIT_PAGES):
                        os.pwrite(fd, block, (first + j) * BLOCK)
                for label, write in [("scattered", scattered), ("contiguous", contiguous)]:
                    samples = timed(fd, write, COMMIT_ROUNDS)
                    print(
                        f"{COMMIT_PAGES} pages {label:10} + fdatasync   "
                        f"{percentiles(samples, tail=True)}"
                    )
        finally:
            os.close(fd)
            os.unlink(path)


if __name__ == "__main__":
    main()
