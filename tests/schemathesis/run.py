#!/usr/bin/env python3
"""Runs schemathesis against the real daemon's own OpenAPI document (`/api/openapi.json`).

Starts the daemon given as argv[1] (default: target/debug/indaba) in dev mode on an ephemeral
loopback port with a temp data dir and a service secret, registers two local users (and logs
in, for an access token), gives them a conversation with a message so that ids in the
document's examples exist, then runs every check schemathesis has over every operation of
the document, with a bounded number of examples: first every operation but the admin API's,
then the admin API's on their own (they disable and erase users, the caller among them), and
prints how many operations answered 2xx at least once. Fails (exit 1) on any finding: a 5xx, a
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
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/indaba")
EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "30")
SEED = os.environ.get("SCHEMATHESIS_SEED") or str(random.randrange(2**32))
SERVICE_SECRET = "schemathesis-service-secret"
REPORT_DIR = os.path.join(ROOT, "target", "schemathesis")


# The admin operations disable and erase users (the token's own user among them) and delete
# messages: run with the others, they left every later request of the user refused (401/403)
# and the rest of the run without coverage. So they run last, in a pass of their own, once every
# other operation has been tested as a user still let in.
PASSES = [
    ("api", ["--exclude-tag", "admin"]),
    ("admin", ["--include-tag", "admin"]),
]


def schemathesis(base, token, report_dir):
    """The command of one pass; the pass adds which operations it tests. One worker: with two,
    hypothesis describing its filters from two threads at once met CPython 3.11's "AST
    constructor recursion depth mismatch" (a SystemError, reported as a failed run) in 2 runs
    of 2; with one, in none of 3."""
    return [
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
        "1",
        "--request-timeout",
        "30",
        "--header",
        "Authorization: Bearer " + token,
        "--header",
        "X-Service-Token: " + SERVICE_SECRET,
        "--report",
        "junit,ndjson",
        "--report-dir",
        report_dir,
        "--output-truncate",
        "false",
    ]


def coverage(document, report_dirs):
    """Per operation of `document` ("METHOD /path"): the statuses its requests got in the
    ndjson reports under `report_dirs`."""
    operations = []
    for path, item in document["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "/?$")
        for method in item:
            if method in ("get", "put", "post", "delete", "patch", "head", "options"):
                operations.append((method.upper(), pattern, f"{method.upper()} {path}"))
    statuses = {label: set() for _, _, label in operations}
    for report_dir in report_dirs:
        for name in os.listdir(report_dir):
            if not name.endswith(".ndjson"):
                continue
            with open(os.path.join(report_dir, name), encoding="utf-8") as f:
                for line in f:
                    finished = json.loads(line).get("ScenarioFinished")
                    if not finished:
                        continue
                    for interaction in finished.get("recorder", {}).get("interactions", {}).values():
                        response = interaction.get("response")
                        if not response:
                            continue
                        request = interaction["request"]
                        path = urllib.parse.urlsplit(request["uri"]).path
                        for method, pattern, label in operations:
                            if request["method"] == method and pattern.match(path):
                                statuses[label].add(response["status_code"])
                                break
    return statuses


def print_coverage(base, report_dirs):
    """How many operations answered 2xx at least once, and which never did."""
    with urllib.request.urlopen(base + "/api/openapi.json", timeout=30) as r:
        document = json.loads(r.read())
    statuses = coverage(document, report_dirs)
    ok = [label for label, got in statuses.items() if any(200 <= s < 300 for s in got)]
    print(f"operations answered 2xx at least once: {len(ok)} of {len(statuses)}")
    for label, got in sorted(statuses.items()):
        if label not in ok:
            print(f"  never 2xx: {label} (got {sorted(got) or 'no answer'})")


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
        print(f"SCHEMATHESIS_SEED={SEED} SCHEMATHESIS_EXAMPLES={EXAMPLES}", flush=True)
        failed = []
        report_dirs = []
        for name, selection in PASSES:
            report_dir = os.path.join(REPORT_DIR, name)
            os.makedirs(report_dir)
            report_dirs.append(report_dir)
            started = time.time()
            result = subprocess.run(schemathesis(base, token, report_dir) + selection, cwd=report_dir)
            print(f"schemathesis ({name}) exited {result.returncode} after {time.time() - started:.0f} s", flush=True)
            if result.returncode != 0:
                failed.append(name)
        print_coverage(base, report_dirs)
        time.sleep(0.5)
        trouble = [l for l in log if " ERROR " in l or '"level":"ERROR"' in l or "panicked" in l]
        if trouble:
            print("the daemon logged errors meanwhile:\n" + "\n".join(trouble[:50]))
        if daemon.poll() is not None:
            print(f"the daemon exited ({daemon.returncode}) during the run")
            return 1
        return 1 if failed or trouble else 0
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
