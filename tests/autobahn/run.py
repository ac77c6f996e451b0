#!/usr/bin/env python3
"""Runs the Autobahn WebSocket test-suite cases against indaba's frame handling.

Starts the daemon given as argv[1] (default: target/release/indaba) on a free loopback port
with a temp data dir and `server.websocket_echo = true`, drives /ws/echo/ with kosoku (a
native runner of Autobahn's case files), and fails if any case is FAILED or ERROR.
Groups 12 and 13 (permessage-deflate) are excluded: indaba does not negotiate compression.

    pip install kosoku==0.1.0
    python3 tests/autobahn/run.py target/release/indaba
"""

import asyncio
import collections
import os
import socket
import subprocess
import sys
import tempfile
import time

import kosoku

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/indaba"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


with tempfile.TemporaryDirectory() as data:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "INDABA_SERVER__WEBSOCKET_ECHO": "true",
            # Case group 9 sends messages up to 16 MiB; 10.1.1 sends 64 KiB.
            "INDABA_LIMITS__MAX_FRAME_BYTES": str(20 * 1024 * 1024),
            "INDABA_LIMITS__OUTBOUND_BUFFER": "100000",
            "INDABA_LOG__LEVEL": "warn",
        }
    )
    daemon = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        env=env,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        started = time.time()
        try:
            results = asyncio.run(
                kosoku.run_fuzzingclient(
                    f"ws://127.0.0.1:{port}/ws/echo/",
                    exclude_cases=["12.*", "13.*"],
                    concurrency=2,
                )
            )
            failed = []
        except kosoku.FailureError as e:
            results = e.results
            failed = None
        elapsed = time.time() - started
        tally = collections.Counter()
        bad = []
        for r in results:
            verdict = r.behavior.value
            close_verdict = r.behavior_close.value
            tally[verdict] += 1
            if verdict in ("FAILED", "ERROR") or close_verdict in ("FAILED", "WRONG CODE", "UNCLEAN"):
                bad.append(r)
        for r in bad:
            print("NOT PASSED:", r.case_id, r.behavior.value, r.behavior_close.value, r.description[:100])
        lenient = [r.case_id for r in results if r.behavior.value != "OK"]
        print("not OK (acceptable):", " ".join(lenient))
        summary = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
        print(f"autobahn: {len(results)} cases in {elapsed:.0f} s: {summary}")
        ok = not bad and failed is not None
        print(f"{len(results) - len(bad)} passed, {len(bad)} failed")
        sys.exit(0 if ok else 1)
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)
