#!/usr/bin/env python3
r"""Proxy benchmark: wrk straight to one mend-demo replica, and through mend-proxy, nginx and haproxy in
front of the same two replicas; then failover under constant load (kill -9, SIGSTOP, rolling restart);
then the same failovers (and a run without a fault) in front of two fragile replicas (`fragile_server.py`:
single-threaded HTTP/1.0 with a listen backlog of 5) under `hey -c 16`, more connections than the
backlog holds.

All traffic stays on 127.0.0.1; every run is bounded in time and request count. Usage (from the repo root):

  cargo build --release -p mend --bin mend-demo
  cargo build --release -p mend-proxy --example proxy
  apt-get install -y wrk hey nginx-light haproxy
  python3 bench/proxy/bench.py [--duration 10] [--json /tmp/proxy-bench.json]
  python3 bench/proxy/bench.py --only-fragile     # the fragile-server failovers alone
  # two mend-proxy builds side by side (this tree's and another), three runs of each scenario:
  python3 bench/proxy/bench.py --only-fragile --build before=/tmp/proxy-before \
      --proxies mend-proxy,before,nginx,haproxy,haproxy-active --repeat 3 [--fragile-connections 64]

CPU layout on this 2-core machine: wrk is pinned to CPU 1; the proxy under test is pinned to CPU 0 (1
worker) or to both CPUs (2 workers, each worker on its own CPU: nginx worker_cpu_affinity, haproxy
cpu-map, mend-proxy --pin-loops); the two mend-demo replicas (2 tokio threads each) float.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} did not open")


def cpu_seconds(pids):
    """utime + stime of the processes (and their threads), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Replica:
    def __init__(self, demo, port):
        self.demo, self.port, self.proc = demo, port, None

    def start(self):
        self.proc = subprocess.Popen([self.demo, "--port", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Proxy:
    """One proxy under test: start(), pids() for CPU accounting, stop()."""

    def __init__(self, name, argv, port, cwd=None, stdin=False):
        self.name, self.argv, self.port, self.cwd, self.stdin = name, argv, port, cwd, stdin
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                                     text=True)
        wait_port(self.port)
        if self.stdin:
            self.proc.stdout.readline()  # "listening on ..."

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.stdin else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def render(template, out, **values):
    with open(template) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    with open(out, "w") as f:
        f.write(text)


# mend-proxy builds by label: "mend-proxy" is this tree's; `--build LABEL=PATH` adds others, so that two
# builds run side by side in one run (same load on the machine) next to nginx and haproxy.
MEND_BUILDS = {"mend-proxy": os.path.join(ROOT, "target/release/examples/proxy")}
# Extra arguments of a mend build: `--tracing` adds the same binary with tracing on at 1 % and 100 %.
MEND_ARGS = {}


def is_mend(kind):
    return kind in MEND_BUILDS


def make_proxy(kind, workers, ups, tmp, read_timeout="5s"):
    port = free_port()
    cpus = "0" if workers == 1 else "0-1"
    if is_mend(kind):
        argv = ["taskset", "-c", cpus, MEND_BUILDS[kind], "--listen",
                f"127.0.0.1:{port}", "--threads", str(workers)] + MEND_ARGS.get(kind, [])
        for up in ups:
            argv += ["--upstream", f"127.0.0.1:{up}"]
        if workers > 1:
            argv.append("--pin-loops")  # one event loop per CPU, as nginx's worker_cpu_affinity
        return Proxy(kind, argv, port, stdin=True)
    if kind == "nginx":
        conf = os.path.join(tmp, f"nginx-{port}.conf")
        affinity = "01" if workers == 1 else "01 10"
        render(os.path.join(HERE, "nginx.conf.in"), conf, WORKERS=workers, AFFINITY=affinity, DIR=tmp,
               UP1=ups[0], UP2=ups[1], PORT=port, READ_TIMEOUT=read_timeout)
        return Proxy(kind, ["nginx", "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "nginx-error.log")], port)
    if kind in ("haproxy", "haproxy-active"):
        conf = os.path.join(tmp, f"haproxy-{port}.cfg")
        # "haproxy-active": active health checks only, no passive marking down (observe layer7), as in
        # issue 12's report, where haproxy lost few requests in front of fragile servers.
        passive = "" if kind == "haproxy-active" else " observe layer7 error-limit 3 on-error mark-down"
        render(os.path.join(HERE, "haproxy.cfg.in"), conf, WORKERS=workers, CPUS=cpus, UP1=ups[0], UP2=ups[1],
               PORT=port, READ_TIMEOUT=read_timeout, PASSIVE=passive)
        return Proxy(kind, ["haproxy", "-f", conf], port)
    raise ValueError(kind)


def wrk(port, duration, connections):
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
            f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def quantile(q):
        value, unit = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": rps, "requests": total, "p50_ms": quantile(50), "p99_ms": quantile(99),
            "non_2xx": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else ""}


def throughput(args, ups, tmp):
    rows = []
    direct = wrk(ups[0], args.duration, args.connections)
    direct.update(name="direct to one replica", workers="-", cpu_us=None)
    rows.append(direct)
    for workers in (1, 2):
        for kind in args.proxies.split(","):
            proxy = make_proxy(kind, workers, ups, tmp)
            proxy.start()
            try:
                wrk(proxy.port, 2, args.connections)  # warm-up: connection pools, caches
                before = cpu_seconds(proxy.pids())
                result = wrk(proxy.port, args.duration, args.connections)
                after = cpu_seconds(proxy.pids())
            finally:
                proxy.stop()
            result.update(name=kind, workers=workers, cpu_us=(after - before) / result["requests"] * 1e6)
            rows.append(result)
            print(f"  {kind} x{workers}: {result['rps']:.0f} req/s p50 {result['p50_ms']:.2f} ms "
                  f"p99 {result['p99_ms']:.2f} ms cpu {result['cpu_us']:.1f} us/req", file=sys.stderr)
    return rows


class Load:
    """Constant closed-loop load: `threads` clients, keep-alive, each request bounded by `timeout`."""

    def __init__(self, port, threads=4, timeout=10.0, max_requests=200_000, duration=30.0):
        self.port, self.threads, self.timeout = port, threads, timeout
        self.max_requests, self.duration = max_requests, duration
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = self.failed = 0
        self.latencies = []
        self.failures = []

    def client(self):
        conn = None
        deadline = time.monotonic() + self.duration
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            with self.lock:
                if self.ok + self.failed >= self.max_requests:
                    return
            start = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                good = response.status == 200
                reason = response.status
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as error:
                good, reason = False, type(error).__name__
                conn.close()
                conn = None
            elapsed = time.monotonic() - start
            with self.lock:
                self.latencies.append(elapsed)
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.failures.append(str(reason))

    def __enter__(self):
        self.workers = [threading.Thread(target=self.client, daemon=True) for _ in range(self.threads)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for worker in self.workers:
            worker.join(timeout=self.timeout + 5)

    def result(self):
        total = self.ok + self.failed
        return {"total": total, "failed": self.failed, "worst_ms": max(self.latencies) * 1e3 if self.latencies else 0,
                "p99_ms": statistics.quantiles(self.latencies, n=100)[98] * 1e3 if len(self.latencies) > 100 else 0,
                "failure_kinds": sorted(set(self.failures))[:5]}


def failover(kind, scenario, args, demo, tmp):
    ups = [free_port(), free_port()]
    replicas = [Replica(demo, port) for port in ups]
    for replica in replicas:
        replica.start()
    proxy = make_proxy(kind, 1, ups, tmp)
    proxy.start()
    try:
        with Load(proxy.port, duration=args.failover_seconds + 15) as load:
            time.sleep(1.0)
            if scenario == "kill -9":
                replicas[0].proc.kill()
                time.sleep(args.failover_seconds)
            elif scenario == "SIGSTOP":
                os.kill(replicas[0].proc.pid, signal.SIGSTOP)
                time.sleep(args.failover_seconds)
                os.kill(replicas[0].proc.pid, signal.SIGCONT)
                time.sleep(0.5)
            elif scenario == "rolling restart":
                for idx, replica in enumerate(replicas):
                    if is_mend(kind):
                        outcome = proxy.command(f"drain {idx}")
                        print(f"    {outcome}", file=sys.stderr)
                    replica.stop(signal.SIGTERM)
                    if is_mend(kind):
                        proxy.command(f"down {idx}")
                    time.sleep(0.5)
                    replica.start()
                    if is_mend(kind):
                        proxy.command(f"up {idx}")
                    time.sleep(args.failover_seconds / 2)
            time.sleep(0.5)
        if is_mend(kind):
            print(f"    {proxy.command('stats')}", file=sys.stderr)
        return load.result()
    finally:
        proxy.stop()
        for replica in replicas:
            try:
                os.kill(replica.proc.pid, signal.SIGCONT)
            except OSError:
                pass
            replica.stop(signal.SIGKILL)


class Fragile:
    """A fragile replica: `fragile_server.py` on a port."""

    def __init__(self, port):
        self.port, self.proc = port, None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fragile_server.py"), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self, sig=signal.SIGTERM):
        Replica.stop(self, sig)


def hey(port, seconds, connections):
    """Runs hey in the background; returns the process (its stdout is the report)."""
    argv = ["hey", "-z", f"{seconds}s", "-c", str(connections), f"http://127.0.0.1:{port}/"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def hey_result(out):
    """Requests, failed ones (any status but 200, and errors: hey's connection-level failures) and the
    slowest request, from hey's report."""
    ok = failed = 0
    section = None
    for line in out.splitlines():
        if line.startswith("Status code distribution"):
            section = "status"
        elif line.startswith("Error distribution"):
            section = "errors"
        elif section == "status" and (m := re.match(r"\s+\[(\d+)\]\s+(\d+) responses", line)):
            if m.group(1) == "200":
                ok += int(m.group(2))
            else:
                failed += int(m.group(2))
        elif section == "errors" and (m := re.match(r"\s+\[(\d+)\]\s+(.*)", line)):
            failed += int(m.group(1))
    slowest = float(re.search(r"Slowest:\s+([\d.]+) secs", out).group(1))
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    return {"total": ok + failed, "failed": failed, "worst_ms": slowest * 1e3,
            "p99_ms": float(p99.group(1)) * 1e3 if p99 else 0.0}


def fragile_failover(kind, scenario, args, tmp):
    """Two fragile replicas behind `kind`, `hey -c N` (`--fragile-connections`, 16 by default: more than
    a backlog of 5 holds) for `args.fragile_seconds`, one fault 3 s in ("no fault": none). After a
    kill -9 the replica is started again 1 s later, as a supervisor would (mend-proxy is told what mend
    would tell it: the replica left the table, and came back as a new generation)."""
    ups = [free_port(), free_port()]
    replicas = [Fragile(port) for port in ups]
    for replica in replicas:
        replica.start()
    proxy = make_proxy(kind, 1, ups, tmp)
    proxy.start()
    try:
        load = hey(proxy.port, args.fragile_seconds, args.fragile_connections)
        time.sleep(3.0)
        if scenario == "kill -9":
            replicas[0].proc.kill()
            replicas[0].proc.wait()
            if is_mend(kind):
                proxy.command("down 0")
            time.sleep(1.0)
            replicas[0].start()
            if is_mend(kind):
                proxy.command("up 0")
        elif scenario == "SIGSTOP":
            os.kill(replicas[0].proc.pid, signal.SIGSTOP)
            time.sleep(4.0)
            os.kill(replicas[0].proc.pid, signal.SIGCONT)
        elif scenario == "rolling restart":
            for idx, replica in enumerate(replicas):
                if is_mend(kind):
                    print(f"    {proxy.command(f'drain {idx}')}", file=sys.stderr)
                replica.stop(signal.SIGTERM)
                if is_mend(kind):
                    proxy.command(f"down {idx}")
                time.sleep(0.5)
                replica.start()
                if is_mend(kind):
                    proxy.command(f"up {idx}")
                time.sleep(1.5)
        out, _ = load.communicate(timeout=args.fragile_seconds + 60)
        if is_mend(kind):
            print(f"    {proxy.command('stats')}", file=sys.stderr)
        return hey_result(out)
    finally:
        proxy.stop()
        for replica in replicas:
            try:
                os.kill(replica.proc.pid, signal.SIGCONT)
            except OSError:
                pass
            replica.stop(signal.SIGKILL)


FAULTS = ("kill -9", "SIGSTOP", "rolling restart")


def failover_table(title, scenarios, run, args, report_key, report):
    """Each scenario against each proxy, `--repeat` times, interleaved (proxy after proxy, then the next
    repetition) so that the machine's load falls alike on all; then the sums per scenario and proxy."""
    report[report_key] = []
    print(f"\n| {title} | proxy | run | requests | failed | worst latency ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for scenario in scenarios:
        for repetition in range(1, args.repeat + 1):
            for kind in args.proxies.split(","):
                print(f"  {title} {scenario} / {kind} ({repetition})", file=sys.stderr)
                result = run(kind, scenario)
                result.update(scenario=scenario, proxy=kind, run=repetition)
                report[report_key].append(result)
                print(f"| {scenario} | {kind} | {repetition} | {result['total']} | {result['failed']} "
                      f"| {result['worst_ms']:.0f} | {result['p99_ms']:.1f} |", flush=True)
    if args.repeat > 1:
        print(f"\n| {title} | proxy | runs | requests | failed (sum) | runs with a failure | worst latency ms (max) "
              f"| worst latency ms (median of runs) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for scenario in scenarios:
            for kind in args.proxies.split(","):
                runs = [r for r in report[report_key] if r["scenario"] == scenario and r["proxy"] == kind]
                worst = [r["worst_ms"] for r in runs]
                print(f"| {scenario} | {kind} | {len(runs)} | {sum(r['total'] for r in runs)} "
                      f"| {sum(r['failed'] for r in runs)} | {sum(1 for r in runs if r['failed'])} "
                      f"| {max(worst):.0f} | {statistics.median(worst):.0f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default=os.path.join(ROOT, "target/release/mend-demo"))
    parser.add_argument("--mend-proxy", default=MEND_BUILDS["mend-proxy"], help="the proxy example binary")
    parser.add_argument("--build", action="append", default=[], metavar="LABEL=PATH",
                        help="another mend-proxy build, to run beside the others (name LABEL in --proxies)")
    parser.add_argument("--proxies", default="mend-proxy,nginx,haproxy",
                        help="comma-separated proxies (mend-proxy, nginx, haproxy, --build labels); "
                             "the throughput table's ratios need nginx")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each failover scenario per proxy")
    parser.add_argument("--fragile-seconds", type=int, default=10)
    parser.add_argument("--fragile-connections", type=int, default=16, help="hey's connections (fragile table)")
    parser.add_argument("--skip-fragile", action="store_true")
    parser.add_argument("--only-fragile", action="store_true")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--failover-seconds", type=float, default=4.0)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--tracing", action="store_true",
                        help="also run mend-proxy with tracing at 1 %% and 100 %% (trace-1, trace-100)")
    args = parser.parse_args()
    MEND_BUILDS["mend-proxy"] = args.mend_proxy
    if args.tracing:
        for label, ratio in (("trace-1", "0.01"), ("trace-100", "1.0")):
            MEND_BUILDS[label] = args.mend_proxy
            MEND_ARGS[label] = ["--trace-ratio", ratio]
            if label not in args.proxies.split(","):
                args.proxies += f",{label}"
    for build in args.build:
        label, _, path = build.partition("=")
        if not label or not path or label in ("nginx", "haproxy", "haproxy-active"):
            parser.error(f"--build {build!r}: expected LABEL=PATH with a label other than nginx, haproxy and haproxy-active")
        if not os.access(path, os.X_OK):
            parser.error(f"--build {build!r}: {path} is not an executable")
        MEND_BUILDS[label] = path
    for kind in args.proxies.split(","):
        if kind not in MEND_BUILDS and kind not in ("nginx", "haproxy", "haproxy-active"):
            parser.error(f"--proxies: unknown proxy {kind!r} (mend-proxy, nginx, haproxy, haproxy-active "
                         f"or a --build label)")
    if args.only_fragile:
        args.skip_throughput = args.skip_failover = True
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_throughput:
            if "nginx" not in args.proxies.split(","):
                parser.error("--proxies: the throughput table needs nginx (its ratios are to nginx)")
            ups = [free_port(), free_port()]
            replicas = [Replica(args.demo, port) for port in ups]
            for replica in replicas:
                replica.start()
            try:
                report["throughput"] = throughput(args, ups, tmp)
            finally:
                for replica in replicas:
                    replica.stop()
            nginx1 = next(r for r in report["throughput"] if r["name"] == "nginx" and r["workers"] == 1)
            nginx2 = next(r for r in report["throughput"] if r["name"] == "nginx" and r["workers"] == 2)
            print("\n| target | workers | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs nginx | p99 vs nginx | CPU vs nginx |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for row in report["throughput"]:
                ref = nginx1 if row["workers"] in (1, "-") else nginx2
                cpu = f"{row['cpu_us']:.1f}" if row["cpu_us"] is not None else "—"
                cpu_ratio = f"{row['cpu_us'] / ref['cpu_us']:.2f}×" if row["cpu_us"] is not None else "—"
                print(f"| {row['name']} | {row['workers']} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                      f"| {cpu} | {row['rps'] / ref['rps']:.2f}× | {row['p99_ms'] / ref['p99_ms']:.2f}× | {cpu_ratio} |")
        if not args.skip_failover:
            failover_table("scenario", FAULTS, lambda kind, scenario: failover(kind, scenario, args, args.demo, tmp),
                           args, "failover", report)
        if not args.skip_fragile:
            failover_table(f"fragile replicas, hey -c {args.fragile_connections}", ("no fault",) + FAULTS,
                           lambda kind, scenario: fragile_failover(kind, scenario, args, tmp), args, "fragile", report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
