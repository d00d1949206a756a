#!/usr/bin/env python3
"""A small web service exposing Prometheus metrics, for mend's worked healing example.

GET /          hello
GET /health    ok
GET /metrics   Prometheus text exposition: app_cpu_percent (this process's CPU use over the last second),
               process_cpu_seconds_total, app_requests_total
POST /burn     starts burning CPU until the process ends (the fault mend heals by restarting it)

Only the standard library: python3 app.py --port 9301
"""

import argparse
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"cpu_percent": 0.0, "requests": 0}
LOCK = threading.Lock()


def cpu_seconds():
    times = os.times()
    return times.user + times.system


def sample_cpu():
    """Every second: this process's CPU use over the last second, in percent of one core."""
    last_cpu, last_at = cpu_seconds(), time.monotonic()
    while True:
        time.sleep(1.0)
        cpu, now = cpu_seconds(), time.monotonic()
        with LOCK:
            STATE["cpu_percent"] = 100.0 * (cpu - last_cpu) / max(now - last_at, 1e-6)
        last_cpu, last_at = cpu, now


def burn():
    while True:
        sum(i * i for i in range(10_000))


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body, content_type="text/plain; charset=utf-8"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with LOCK:
            STATE["requests"] += 1
            cpu_percent, requests = STATE["cpu_percent"], STATE["requests"]
        if self.path == "/health":
            self.reply(200, "ok\n")
        elif self.path == "/metrics":
            self.reply(
                200,
                "# HELP app_cpu_percent CPU used by this process over the last second, in percent of one core.\n"
                "# TYPE app_cpu_percent gauge\n"
                f"app_cpu_percent {cpu_percent:.3f}\n"
                "# HELP process_cpu_seconds_total CPU time used by this process.\n"
                "# TYPE process_cpu_seconds_total counter\n"
                f"process_cpu_seconds_total {cpu_seconds():.3f}\n"
                "# HELP app_requests_total Requests served.\n"
                "# TYPE app_requests_total counter\n"
                f"app_requests_total {requests}\n",
                "text/plain; version=0.0.4; charset=utf-8",
            )
        else:
            self.reply(200, f"hello from pid {os.getpid()}\n")

    def do_POST(self):
        if self.path == "/burn":
            threading.Thread(target=burn, daemon=True).start()
            self.reply(200, "burning CPU\n")
        else:
            self.reply(404, "not found\n")

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9301)
    args = parser.parse_args()
    threading.Thread(target=sample_cpu, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
