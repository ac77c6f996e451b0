#!/usr/bin/env python3
"""Runs schemathesis against the real daemon's own OpenAPI document (`/api/openapi.json`).

Starts the daemon given as argv[1] (default: target/debug/indaba) in dev mode on an ephemeral
loopback port with a temp data dir and a service secret, registers two local users (and logs
in, for an access token), gives them a conversation with a message so that ids in the
document's examples exist, then runs every check schemathesis has over every operation of
the document, with a bounded number of examples. Fails (exit 1) on any finding: a 5xx, a
status, header, content type or body the document does not describe, a request the document
says is invalid that was accepted, or a valid one refused. Also fails if the daemon logged
anything at ERROR or panicked meanwhile.

    pip install schemathesis==4.32.5
    python3 tests/schemathesis/run.py target/debug/indaba

SCHEMATHESIS_EXAMPLES (default 30) sets examples per operation and phase; SCHEMATHESIS_SEED
repeats a run (the seed is printed). The report (JUnit XML, and an ndjson of every request)
goes to target/schemathesis/. docs/RELIABILITY.md says more.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/indaba")
EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "30")
SEED = os.environ.get("SCHEMATHESIS_SEED") or str(random.randrange(2**32))
SERVICE_SECRET = "schemathesis-service-secret"
REPORT_DIR = os.path.join(ROOT, "target", "schemathesis")


def call(base, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def start(data):
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    env.pop("INDABA_CONFIG", None)
    env.update(
        {
            "INDABA_SERVICE__SHARED_SECRET": SERVICE_SECRET,
            # The tests send far more than a person would: keep the rate limits out of the way
            # of what is checked here (they have tests of their own).
            "INDABA_LIMITS__MESSAGES_PER_SECOND": "100000",
            "INDABA_LIMITS__MESSAGES_BURST": "100000",
        }
    )
    daemon = subprocess.Popen(
        [BINARY, "--listen", "127.0.0.1:0", "--data-dir", data, "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = []
    ready = threading.Event()
    base = []

    def read():
        for line in daemon.stderr:
            log.append(line.rstrip("\n"))
            if "listening on http://" in line and not base:
                base.append("http://" + line.split("listening on http://")[1].split()[0].rstrip('"'))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(60)
    if not base:
        daemon.kill()
        sys.exit("the daemon did not start:\n" + "\n".join(log))
    return daemon, base[0], log


def main():
    data = tempfile.mkdtemp(prefix="indaba-schemathesis-")
    daemon = None
    try:
        daemon, base, log = start(data)
        password = "correct horse battery"
        ann = call(base, "POST", "/api/v1/auth/register/", {"username": "ann", "password": password})
        bob = call(base, "POST", "/api/v1/auth/register/", {"username": "bob", "password": password})
        token = call(base, "POST", "/api/v1/auth/token/", {"username": "ann", "password": password})["access"]
        conversation = call(
            base, "POST", "/api/v1/messaging/conversations/", {"participants": [bob["id"]]}, token
        )
        call(base, "POST", "/api/v1/messaging/messages/", {"conversation": conversation["id"], "text": "hello"}, token)
        print(f"daemon at {base}; users {ann['id']} and {bob['id']}, conversation {conversation['id']}")

        shutil.rmtree(REPORT_DIR, ignore_errors=True)
        os.makedirs(REPORT_DIR)
        command = [
            "schemathesis",
            "--config-file",
            os.path.join(ROOT, "tests", "schemathesis", "schemathesis.toml"),
            "run",
            base + "/api/openapi.json",
            "--url",
            base,
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--header",
            "Authorization: Bearer " + token,
            "--header",
            "X-Service-Token: " + SERVICE_SECRET,
            "--report",
            "junit,ndjson",
            "--report-dir",
            REPORT_DIR,
            "--output-truncate",
            "false",
        ]
        print(f"SCHEMATHESIS_SEED={SEED} SCHEMATHESIS_EXAMPLES={EXAMPLES}", flush=True)
        started = time.time()
        result = subprocess.run(command, cwd=REPORT_DIR)
        print(f"schemathesis exited {result.returncode} after {time.time() - started:.0f} s", flush=True)
        time.sleep(0.5)
        trouble = [l for l in log if " ERROR " in l or '"level":"ERROR"' in l or "panicked" in l]
        if trouble:
            print("the daemon logged errors meanwhile:\n" + "\n".join(trouble[:50]))
        if daemon.poll() is not None:
            print(f"the daemon exited ({daemon.returncode}) during the run")
            return 1
        return 1 if result.returncode != 0 or trouble else 0
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
