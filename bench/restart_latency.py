#!/usr/bin/env python3
"""Crash -> serving: mend side by side with a bare shell respawn loop, in the same run.

For each tool, one mend-demo replica on its own port; each crash is a SIGKILL of the replica's process,
timed from just before the kill until a *new* pid answers GET / on the port (the client tries every
0.2 ms). Both tools run with and without extra idle processes on the host (`--extra 2000` sleeps), since
what mend does at an exit may scan every process on the host. The tools take turns, one crash each, so
that the machine's noise falls on both alike.

All traffic goes to 127.0.0.1; every wait is bounded. Usage:
  cargo build --release
  python3 bench/restart_latency.py [--crashes 20] [--extra 2000] [--json FILE]
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_pid(port, timeout=0.05):
    """The pid that answers GET / on `port`, or None."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", "/")
        body = conn.getresponse().read().decode()
        conn.close()
        if "(pid " in body:
            return int(body.split("(pid ")[1].split(")")[0])
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return None


def wait_pid(port, other_than=None, timeout=20.0, poll=0.0002):
    """Polls until a pid other than `other_than` answers; returns (pid, monotonic time) or raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = demo_pid(port)
        if pid is not None and pid != other_than:
            return pid, time.monotonic()
        time.sleep(poll)
    raise RuntimeError(f"no new process answered on port {port} within {timeout}s")


class ShellLoop:
    name = "shell loop"

    def __init__(self, demo, workdir):
        self.demo, self.workdir = demo, workdir

    def start(self, port):
        script = f"while true; do {self.demo} --port {port} >/dev/null 2>&1; done"
        self.process = subprocess.Popen(["sh", "-c", script], start_new_session=True)

    def stop(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class Mend:
    name = "mend"

    def __init__(self, mend, demo, workdir):
        self.mend, self.demo, self.workdir = mend, demo, workdir

    def start(self, port):
        config = os.path.join(self.workdir, "mend.toml")
        # Independent crashes seconds apart, not a crash loop: reset_after and the restart limit are set so
        # that the back-off and the limit (which give up on a loop by design) do not apply. Else defaults.
        with open(config, "w") as f:
            f.write(
                f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
                f'[service.demo]\ncommand = ["{self.demo}", "--port", "{{port}}"]\nports = "{port}"\n'
                '[service.demo.liveness]\nhttp = "http://127.0.0.1:{port}/health"\n'
                '[service.demo.backoff]\nreset_after = "100ms"\n'
                "[service.demo.restart_limit]\nmax_restarts = 100000\n"
            )
        self.process = subprocess.Popen(
            [self.mend, "run", "-c", config, "--state-dir", os.path.join(self.workdir, "state"), "--log", "warn"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def crash_and_time(port):
    """Kills whatever answers on `port` and returns seconds until a new process answers."""
    pid, _ = wait_pid(port)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    _, answered_at = wait_pid(port, other_than=pid)
    return answered_at - killed_at


def spawn_idle(n):
    """`n` idle processes (sleep), as a busy host has; returns them to be killed later."""
    return [
        subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for _ in range(n)
    ]


def summary(samples):
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p95_ms": p95 * 1e3,
        "n": len(ordered),
        "samples_ms": [round(x * 1e3, 2) for x in samples],
    }


def run_condition(args, extra):
    idle = spawn_idle(extra)
    try:
        n_processes = len([d for d in os.listdir("/proc") if d.isdigit()])
        with tempfile.TemporaryDirectory() as shell_dir, tempfile.TemporaryDirectory() as mend_dir:
            tools = [ShellLoop(args.demo, shell_dir), Mend(args.mend, args.demo, mend_dir)]
            ports = {}
            for tool in tools:
                ports[tool.name] = free_port()
                tool.start(ports[tool.name])
            samples = {tool.name: [] for tool in tools}
            try:
                for tool in tools:
                    wait_pid(ports[tool.name])
                time.sleep(1)
                for i in range(args.crashes):
                    for tool in tools:
                        samples[tool.name].append(crash_and_time(ports[tool.name]))
                        # Let the new process settle (and mend's probes find it healthy) before the next.
                        time.sleep(args.settle)
                    print(f"  [{extra} extra] crash {i + 1}/{args.crashes}", file=sys.stderr, end="\r")
            finally:
                for tool in tools:
                    tool.stop()
        print(file=sys.stderr)
        return {"processes_on_host": n_processes, **{name: summary(s) for name, s in samples.items()}}
    finally:
        for process in idle:
            process.kill()
        for process in idle:
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mend", default="target/release/mend")
    parser.add_argument("--demo", default=os.path.abspath("target/release/mend-demo"))
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--extra", type=int, default=2000, help="idle processes added for the second condition")
    parser.add_argument("--settle", type=float, default=0.3, help="seconds between crashes")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    results = {}
    for extra in (0, args.extra):
        results[f"extra_{extra}"] = run_condition(args, extra)
    print(f"{'condition':<24} {'tool':<12} {'median':>9} {'p95':>9}")
    for condition, result in results.items():
        label = f"{result['processes_on_host']} processes"
        for tool in ("shell loop", "mend"):
            r = result[tool]
            print(f"{label:<24} {tool:<12} {r['median_ms']:8.1f}ms {r['p95_ms']:8.1f}ms")
        d_median = result["mend"]["median_ms"] - result["shell loop"]["median_ms"]
        d_p95 = result["mend"]["p95_ms"] - result["shell loop"]["p95_ms"]
        print(f"{'':<24} {'mend - loop':<12} {d_median:+8.1f}ms {d_p95:+8.1f}ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
