#!/usr/bin/env python3
"""Autoscaling benchmark (issue 13): time to scale out under a load step, and replicas over time under a
square-wave load.

Each run starts a fresh `mend run` (its own state directory and ports) with one mend-demo replica behind
mend's proxy, autoscaled on the proxy's request rate per replica:

    [service.web.autoscale]
    min = 1, max = 4, query = 'sum(rate(mend_proxy_requests_total{service="web"}[5s]))', target = 20,
    interval = "2s", window = "20s", rate_window = "2s", max_up = 4, max_down = 1

The load is a fixed-rate loopback client (Python threads with keep-alive connections; bounded in count and
time): `--rate` requests per second (60: three replicas' worth at 20 each).

  step     t0 = the load starts; measured: the autoscaler's first scale action (`started_at`, stamped by
           mend), and all wanted replicas ready (polled every 100 ms through the API). `--runs` runs.
  square   `--periods` periods of `--high` s at `--rate`, `--low` s at 0; the replica count sampled every
           second; printed as change points with the number of scale actions.

    python3 bench/autoscale.py --mend target/debug/mend --demo target/debug/mend-demo --runs 3
"""

import argparse
import http.client
import json
import math
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request


def free_port(n=1):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n >= 65000:
            continue
        ok = True
        for port in range(first, first + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return first


def get(api, path):
    with urllib.request.urlopen(f"http://{api}{path}", timeout=5) as response:
        return json.loads(response.read())


def wait(what, condition, timeout, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(what)


def parse_ts(text):
    import datetime
    return int(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000)


CONFIG = """
[service.web]
command = ["{demo}", "--port", "{{port}}"]
replicas = 1
ports = "{ports}-{last}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
interval = "500ms"
[service.web.proxy]
listen = "127.0.0.1:{proxy}"
[service.web.autoscale]
min = 1
max = 4
query = 'sum(rate(mend_proxy_requests_total{{service="web"}}[5s]))'
target = 20
interval = "2s"
window = "20s"
rate_window = "2s"
max_up = 4
max_down = 1
"""


class Mend:
    def __init__(self, args):
        self.dir = tempfile.TemporaryDirectory()
        self.api = f"127.0.0.1:{free_port()}"
        self.proxy = free_port()
        ports = free_port(4)
        path = os.path.join(self.dir.name, "mend.toml")
        with open(path, "w") as f:
            f.write(f'[api]\nlisten = "{self.api}"\n' + CONFIG.format(
                demo=os.path.abspath(args.demo), ports=ports, last=ports + 3, proxy=self.proxy))
        self.process = subprocess.Popen(
            [args.mend, "run", "-c", path, "--state-dir", os.path.join(self.dir.name, "state"), "--log", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("mend answers", lambda: get(self.api, "/api/v1/services"), 15)
        wait("web ready", lambda: self.n_ready() == 1, 30)

    def replicas(self):
        return get(self.api, "/api/v1/services/web")["replicas"]

    def n_ready(self):
        return sum(1 for r in self.replicas() if r["ready"])

    def scale_actions(self):
        actions = get(self.api, "/api/v1/actions?limit=500")["actions"]
        return sorted((a for a in actions if a["actor"]["by"] == "autoscaler" and a["state"] != "refused"),
                      key=lambda a: a["id"])

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.dir.cleanup()


class Load:
    """`rate` GET requests per second to 127.0.0.1:`port` from 4 keep-alive clients, until stopped or
    `limit_s` seconds (bounded in time, and so in count)."""

    def __init__(self, port, rate, limit_s=300):
        self.stop_flag = threading.Event()
        self.failed = 0
        self.ok = 0
        self.lock = threading.Lock()
        deadline = time.monotonic() + limit_s
        n_clients = 4
        period = n_clients / rate

        def client(offset):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            next_at = time.monotonic() + offset
            while not self.stop_flag.is_set() and time.monotonic() < deadline:
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                next_at += period
                try:
                    connection.request("GET", "/")
                    response = connection.getresponse()
                    response.read()
                    with self.lock:
                        if response.status < 500:
                            self.ok += 1
                        else:
                            self.failed += 1
                except Exception:
                    with self.lock:
                        self.failed += 1
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

        self.threads = [threading.Thread(target=client, args=(i * period / n_clients,), daemon=True)
                        for i in range(n_clients)]
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stop_flag.set()
        for thread in self.threads:
            thread.join()


def step(args):
    wanted = math.ceil(args.rate / 20)
    first_action, all_ready, failed = [], [], 0
    for run in range(args.runs):
        mend = Mend(args)
        try:
            t0 = time.time()
            load = Load(mend.proxy, args.rate)
            try:
                wait("scaled out", lambda: mend.n_ready() >= wanted, 120, every=0.1)
            except TimeoutError:
                print(get(mend.api, "/api/v1/services/web"), load.ok, load.failed, flush=True)
                raise
            ready_s = time.time() - t0
            load.stop()
            failed += load.failed
            action = mend.scale_actions()[0]
            first_action.append(parse_ts(action["started_at"]) / 1000 - t0)
            all_ready.append(ready_s)
            print(f"step run {run + 1}: first action {first_action[-1]:.2f} s ({action['reason']}), "
                  f"{wanted} ready {ready_s:.2f} s, {load.ok} ok, {load.failed} failed", flush=True)
        finally:
            mend.stop()
    print(f"step: median first action {statistics.median(first_action):.2f} s, "
          f"median {wanted} ready {statistics.median(all_ready):.2f} s, {failed} failed requests")


def square(args):
    mend = Mend(args)
    samples = []
    try:
        t0 = time.monotonic()
        for period in range(args.periods):
            load = Load(mend.proxy, args.rate)
            phase_end = t0 + period * (args.high + args.low) + args.high
            while time.monotonic() < phase_end:
                samples.append((time.monotonic() - t0, len(mend.replicas()), "high"))
                time.sleep(1)
            load.stop()
            phase_end += args.low
            while time.monotonic() < phase_end:
                samples.append((time.monotonic() - t0, len(mend.replicas()), "low"))
                time.sleep(1)
        actions = mend.scale_actions()
    finally:
        mend.stop()
    changes = [samples[0]] + [s for prev, s in zip(samples, samples[1:]) if s[1] != prev[1]]
    print("square: replicas over time (change points): " +
          ", ".join(f"{t:.0f}s={n} ({phase})" for t, n, phase in changes))
    deltas = [a["action"]["delta"] for a in actions]
    print(f"square: {len(actions)} scale actions {deltas}, "
          f"{sum(abs(d) for d in deltas)} replica starts and stops in {samples[-1][0]:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mend", default="target/release/mend")
    parser.add_argument("--demo", default="target/release/mend-demo")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=60.0)
    parser.add_argument("--periods", type=int, default=4)
    parser.add_argument("--high", type=float, default=30.0)
    parser.add_argument("--low", type=float, default=30.0)
    parser.add_argument("--only", default="step,square")
    args = parser.parse_args()
    if "step" in args.only:
        step(args)
    if "square" in args.only:
        square(args)


if __name__ == "__main__":
    main()
