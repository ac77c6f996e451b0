#!/usr/bin/env python3
"""A local webhook sink for measuring Indaba with webhooks on (docs/PERFORMANCE.md).

Answers 200 to every POST on keep-alive connections and counts the events it received;
prints the count every 5 s and at exit. Loopback only. Usage:

    python3 benches/webhook_sink.py [PORT]        # default 18999
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNT = {"events": 0, "batches": 0}
LOCK = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            events = len(json.loads(body).get("events", []))
        except (ValueError, AttributeError):
            events = 0
        with LOCK:
            COUNT["events"] += events
            COUNT["batches"] += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 18999
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"sink on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(5)
            with LOCK:
                print(f"events {COUNT['events']} batches {COUNT['batches']}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        with LOCK:
            print(f"events {COUNT['events']} batches {COUNT['batches']}", flush=True)


if __name__ == "__main__":
    main()
