#!/usr/bin/env python3
"""What issue 20's attacks cost mend: /healthz latency, mend's peak memory and the replica's fate while
each runs, for one or more mend binaries side by side (say, before and after the fix).

Scenarios, each on a fresh mend (one mend-demo replica with an HTTP liveness probe every 200 ms, 1 s
timeout), /healthz asked on a new connection every 20 ms throughout:
  idle      nothing else
  query     3 clients sending, over and over, the 1.7 KB query with 40 matchers like l=~"\\p{L}{200}"
  scrape    a 25 MB exposition (500,000 samples) served by python's http.server, scraped every 2 s with
            sample_limit = 1000000 (so it is parsed in full)
  loris     mend under `prlimit --nofile=256`; 300 connections: partial request lines, headers dripped a
            byte a second, idle keep-alives

All traffic goes to 127.0.0.1; every loop is bounded in time. Usage:
  cargo build --release
  python3 bench/hardening.py [--mend target/release/mend] [--mend /path/to/older/mend] [--seconds 20]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, path, timeout=30.0):
    """One GET on a new connection: (status, body, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else 0
    return status, body, elapsed


def status_of(path):
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    except OSError:
        pass
    return fields


class Mend:
    def __init__(self, binary, demo, extra="", wrapper=()):
        self.dir = tempfile.TemporaryDirectory()
        self.api = free_port()
        port = free_port()
        config = os.path.join(self.dir.name, "mend.toml")
        with open(config, "w") as f:
            f.write(
                f'[api]\nlisten = "127.0.0.1:{self.api}"\n'
                f'[service.web]\ncommand = ["{demo}", "--port", "{{port}}"]\nports = "{port}-{port}"\n'
                f'[service.web.liveness]\nhttp = "http://127.0.0.1:{{port}}/health"\n'
                f'interval = "200ms"\ntimeout = "1s"\nfailure_threshold = 3\n{extra}'
            )
        self.log = open(os.path.join(self.dir.name, "mend.log"), "w")
        self.proc = subprocess.Popen(
            [*wrapper, binary, "run", "-c", config, "--state-dir", os.path.join(self.dir.name, "state")],
            stdout=subprocess.DEVNULL, stderr=self.log, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status, body, _ = request(self.api, "/api/v1/services/web", timeout=1)
                replica = json.loads(body)["replicas"][0]
                if status == 200 and replica["ready"]:
                    self.pid = replica["pid"]
                    return
            except (OSError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.05)
        raise RuntimeError("mend did not become ready")

    def replica_pid(self):
        _, body, _ = request(self.api, "/api/v1/services/web", timeout=60)
        return json.loads(body)["replicas"][0]["pid"]

    def events(self, kind):
        _, body, _ = request(self.api, f"/api/v1/events?limit=10000&kind={kind}", timeout=60)
        return json.loads(body)["events"]

    def peak_rss_mib(self):
        hwm = status_of(f"/proc/{self.proc.pid}/status").get("VmHWM", "0 kB").split()[0]
        return int(hwm) / 1024

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.dir.cleanup()


def sample_healthz(port, seconds):
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _, _, elapsed = request(port, "/healthz", timeout=30)
            latencies.append(elapsed)
        except OSError:
            latencies.append(float("inf"))
        time.sleep(0.02)
    return latencies


def hostile_query():
    matchers = ",".join(f'l{idx}=~"\\\\p{{L}}{{200}}"' for idx in range(40))
    return "/api/v1/query?query=" + urllib.parse.quote(f"up{{{matchers}}}")


def scenario(name, mend, seconds, demo):
    stop = threading.Event()
    extra = {}
    threads = []
    if name == "query":
        path = hostile_query()
        extra["answers"] = []

        def client():
            while not stop.is_set():
                try:
                    status, _, elapsed = request(mend.api, path, timeout=120)
                    extra["answers"].append((status, elapsed))
                except OSError:
                    extra["answers"].append((0, float("inf")))

        threads = [threading.Thread(target=client) for _ in range(3)]
    elif name == "loris":
        sockets = []
        for idx in range(300):
            try:
                s = socket.create_connection(("127.0.0.1", mend.api), timeout=2)
                if idx % 3 == 0:
                    s.sendall(b"GET /api/v1/serv")
                elif idx % 3 == 1:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nX-Drip: ")
                else:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                sockets.append((idx % 3, s))
            except OSError:
                pass
        extra["opened"] = len(sockets)
        extra["most_fds"] = 0

        def dripper():
            while not stop.is_set():
                for kind, s in sockets:
                    if kind == 1:
                        try:
                            s.sendall(b"a")
                        except OSError:
                            pass
                try:
                    extra["most_fds"] = max(extra["most_fds"], len(os.listdir(f"/proc/{mend.proc.pid}/fd")))
                except OSError:
                    pass
                stop.wait(1.0)
            for _, s in sockets:
                s.close()

        threads = [threading.Thread(target=dripper)]
    for thread in threads:
        thread.start()
    latencies = sample_healthz(mend.api, seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=180)
    latencies.sort()
    finite = [x for x in latencies if x != float("inf")]
    result = {
        "scenario": name,
        "healthz_n": len(latencies),
        "healthz_failed": len(latencies) - len(finite),
        "healthz_median_ms": round(statistics.median(finite) * 1000, 2) if finite else None,
        "healthz_p99_ms": round(finite[int(len(finite) * 0.99) - 1] * 1000, 1) if finite else None,
        "healthz_max_ms": round(finite[-1] * 1000, 1) if finite else None,
        "healthz_over_100ms": sum(1 for x in latencies if x > 0.1),
        "peak_rss_mib": round(mend.peak_rss_mib(), 1),
    }
    if name == "query":
        answers = extra["answers"]
        result["queries"] = len(answers)
        result["query_statuses"] = sorted({status for status, _ in answers})
        finite_answers = sorted(x for _, x in answers if x != float("inf"))
        result["query_median_ms"] = round(statistics.median(finite_answers) * 1000, 1) if finite_answers else None
    if name == "loris":
        result["opened"] = extra["opened"]
        result["most_fds"] = extra["most_fds"]
    replaced = mend.replica_pid() != mend.pid
    result["replica_replaced"] = replaced
    result["unhealthy_events"] = len(mend.events("unhealthy"))
    result["mend_trouble_events"] = len(mend.events("mend_trouble"))
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mend", action="append", help="mend binaries to compare (default target/release/mend)")
    parser.add_argument("--demo", default="target/release/mend-demo")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only", action="append", help="scenarios to run (idle, query, scrape, loris)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    binaries = args.mend or ["target/release/mend"]
    demo = os.path.abspath(args.demo)
    scenarios = args.only or ["idle", "query", "scrape", "loris"]
    server = None
    results = []
    try:
        heavy_dir = tempfile.TemporaryDirectory()
        with open(os.path.join(heavy_dir.name, "metrics"), "w") as f:
            f.write("# TYPE heavy_metric gauge\n")
            for idx in range(500_000):
                f.write(f'heavy_metric{{shard="{idx % 97}",slot="slot-{idx:08}"}} {idx % 1000}\n')
        heavy_port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(heavy_port), "--bind", "127.0.0.1"],
            cwd=heavy_dir.name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        for name in scenarios:
            for binary in binaries:
                extra = ""
                wrapper = ()
                if name == "scrape":
                    extra = (
                        f'[[scrape]]\nname = "heavy"\nurl = "http://127.0.0.1:{heavy_port}/metrics"\n'
                        'interval = "2s"\ntimeout = "2s"\n'
                    )
                    # An older mend has no sample_limit key (nor a limit): the key is added where the binary
                    # knows it.
                    with open(binary, "rb") as f:
                        if b"sample_limit" in f.read():
                            extra += "sample_limit = 1000000\n"
                if name == "loris":
                    wrapper = ("prlimit", "--nofile=256:256")
                mend = Mend(os.path.abspath(binary), demo, extra, wrapper)
                try:
                    result = scenario(name, mend, args.seconds, demo)
                finally:
                    mend.stop()
                result["mend"] = binary
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        if server:
            server.terminate()
            server.wait()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
