#!/usr/bin/env python3
"""Records the series of healthy mend-demo replicas under a varying, realistic load, for the false-alarm benchmark.

mend supervises three mend-demo replicas behind its proxy, scraping their metrics every second, with the
default detector attached (as a user would) to the replicas' process metrics and to the service's p99
request latency. A bounded load generator on loopback drives the proxy with a compressed day cycle
(quiet nights, busy days), short bursts at random times, and one deploy (a rolling restart through mend's
API) per day. Nothing is faulty: every alarm is a false one.

At the end the raw points of every series (and the p99 latency sampled every 5 s, as mend samples an
expression for a detector) are written as JSON, together with the anomaly signals the daemon raised live.
`cargo run --release -p mend-nab --example false_alarms` replays the recording through the detectors with
the day cycle stretched to 24 hours.

All traffic goes to 127.0.0.1; every loop is bounded in count and time. Usage:
  python3 bench/healthy_series.py --mend target/release/mend --demo target/release/mend-demo \
      --day 480 --days 6 --out bench/data/healthy_series.json
"""

import argparse
import http.client
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

DETECTED = {
    "cpu": 'mend_replica_cpu_percent{service="shop"}',
    "memory": 'mend_replica_resident_memory_bytes{service="shop"}',
    "threads": 'mend_replica_threads{service="shop"}',
    "fds": 'mend_replica_open_fds{service="shop"}',
}
LATENCY = 'histogram_quantile(0.99, sum by (le) (rate(mend_demo_request_duration_seconds_bucket{service="shop"}[30s])))'
# Most requests the load generator sends in one run, whatever the schedule says.
MAX_REQUESTS = 2_000_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def api(port, path, method="GET", timeout=130):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def query(port, expr, **params):
    params = {"query": expr, **params}
    path = "/api/v1/query_range" if "step" in params else "/api/v1/query"
    return api(port, path + "?" + urllib.parse.urlencode(params))["data"]["result"]


class Load:
    """Requests per second at time t (seconds since the start): a day cycle, plus bursts."""

    def __init__(self, day, days, seed):
        rng = random.Random(seed)
        self.day = day
        # Three bursts a day at random times, 2-6 % of a day long, 2-4 times the rate at that moment.
        self.bursts = []
        for day_idx in range(days):
            for _ in range(3):
                start = (day_idx + rng.random()) * day
                self.bursts.append((start, start + day * rng.uniform(0.02, 0.06), rng.uniform(2.0, 4.0)))
        # One deploy a day, at a random time of the working day.
        self.deploys = [(day_idx + rng.uniform(0.35, 0.75)) * day for day_idx in range(days)]

    def rate(self, t):
        phase = (t % self.day) / self.day
        # Night at phase 0: 8 req/s; afternoon peak: 120 req/s.
        base = 8 + 112 * (0.5 - 0.5 * math.cos(2 * math.pi * phase)) ** 1.5
        for start, end, factor in self.bursts:
            if start <= t < end:
                return base * factor
        return base


def generate(port, load, stop_at, counters, worker_idx, n_workers):
    """One load worker: paced keep-alive GETs to the proxy, its share of the rate."""
    conn = None
    start = counters["start"]
    next_at = time.monotonic()
    paths = ["/", "/", "/", "/health"]
    while time.monotonic() < stop_at and counters["sent"] < MAX_REQUESTS:
        now = time.monotonic()
        rate = max(load.rate(now - start) / n_workers, 0.1)
        next_at = max(next_at + 1.0 / rate, now - 1.0)
        if next_at > now:
            time.sleep(min(next_at - now, 0.5))
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", random.choice(paths))
            conn.getresponse().read()
            counters["sent"] += 1
        except (OSError, http.client.HTTPException):
            counters["errors"] += 1
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mend", default="target/release/mend")
    parser.add_argument("--demo", default="target/release/mend-demo")
    parser.add_argument("--day", type=float, default=480.0, help="seconds of one compressed day")
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", default="bench/data/healthy_series.json")
    args = parser.parse_args()
    if args.day * args.days > 6600:
        sys.exit("the series store is set to keep two hours: record at most 110 minutes")

    workdir = tempfile.mkdtemp(prefix="mend-healthy-")
    bindir = os.path.join(workdir, "bin")
    os.makedirs(bindir)
    shutil.copy(args.demo, os.path.join(bindir, "mend-demo"))
    api_port, proxy_port = free_port(), free_port()
    # A range of six free ports (three replicas, three more for a rolling restart's overlap).
    base = 20000 + random.Random(os.getpid()).randrange(0, 20000)
    while not all(port_free(p) for p in range(base, base + 6)):
        base += 7
    detect = "".join(
        f"[[detect]]\nname = \"{name}\"\nseries = '{series}'\ndetector = \"default\"\n\n"
        for name, series in [*DETECTED.items(), ("latency", LATENCY)]
    )
    config = f"""
[api]
listen = "127.0.0.1:{api_port}"

[storage]                         # keep the whole recording (the default keeps 1,000 points a series)
retention = "2h"
max_points_per_series = 8000

[service.shop]
command = ["{os.path.join(bindir, "mend-demo")}", "--port", "{{port}}"]
replicas = 3
ports = "{base}-{base + 5}"
metrics = {{ scrape = "http://127.0.0.1:{{port}}/metrics", interval = "1s" }}

[service.shop.liveness]
http = "http://127.0.0.1:{{port}}/health"

[service.shop.proxy]
listen = "127.0.0.1:{proxy_port}"

{detect}"""
    config_path = os.path.join(workdir, "mend.toml")
    with open(config_path, "w") as f:
        f.write(config)
    daemon = subprocess.Popen(
        [args.mend, "run", "-c", config_path, "--state-dir", os.path.join(workdir, "state"), "--log", "warn"],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(workdir, "mend.log"), "w"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                services = api(api_port, "/api/v1/services/shop")
                if services.get("ready_replicas") == 3:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                with open(os.path.join(workdir, "mend.log")) as log:
                    sys.stderr.write(log.read()[-3000:])
                sys.exit("replicas not ready within 60 s")
            time.sleep(0.2)
        started_wall = time.time()
        load = Load(args.day, args.days, args.seed)
        counters = {"sent": 0, "errors": 0, "start": time.monotonic()}
        stop_at = counters["start"] + args.day * args.days
        workers = [
            threading.Thread(target=generate, args=(proxy_port, load, stop_at, counters, idx, args.workers))
            for idx in range(args.workers)
        ]
        for worker in workers:
            worker.start()
        deploys_done = []
        for deploy_at in load.deploys:
            wait = counters["start"] + deploy_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            began = time.time()
            api(api_port, "/api/v1/services/shop/restart?wait=120s", method="POST")
            deploys_done.append((began - started_wall, time.time() - started_wall))
            print(f"deploy at {began - started_wall:.0f} s took {time.time() - began:.1f} s", flush=True)
        for worker in workers:
            worker.join()
        ended_wall = time.time()
        print(f"{counters['sent']} requests, {counters['errors']} errors", flush=True)

        recording = {
            "day_secs": args.day,
            "days": args.days,
            "started": started_wall,
            "ended": ended_wall,
            "requests": counters["sent"],
            "request_errors": counters["errors"],
            "deploys": deploys_done,
            "bursts": [(s, e, f) for s, e, f in load.bursts],
            "series": [],
            "live_signals": [],
        }
        window = f"{int(ended_wall - started_wall) + 120}s"
        for name, selector in DETECTED.items():
            for series in query(api_port, f"{selector}[{window}]", time=ended_wall):
                points = [(float(t), float(v)) for t, v in series["values"] if float(t) >= started_wall - 60]
                recording["series"].append({"name": name, "labels": series["metric"], "points": points})
        for series in query(api_port, LATENCY, start=started_wall - 60, end=ended_wall, step="5s"):
            points = [(float(t), float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
            recording["series"].append({"name": "latency", "labels": series["metric"], "points": points})
        signals = api(api_port, "/api/v1/signals?limit=1000")
        recording["live_signals"] = [s for s in signals.get("signals", signals) if isinstance(s, dict)]
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(recording, f, separators=(",", ":"))
        n_points = sum(len(s["points"]) for s in recording["series"])
        anomalies = [s for s in recording["live_signals"] if s.get("kind") == "anomaly"]
        print(f"{len(recording['series'])} series, {n_points} points, {len(anomalies)} live anomaly signals -> {args.out}")
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
