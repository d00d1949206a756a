#!/usr/bin/env python3
"""Supervision benchmark: mend side by side with a bare shell respawn loop, supervisord and monit.

Measures, in one run on this machine:
  1. crash -> healthy: kill -9 a mend-demo replica, time until a *new* process answers GET / (median, p95);
  2. SIGSTOP hang -> healthy with each tool's default-style probes;
  3. the supervisor's own RSS and CPU while it supervises 10 idle services.

All traffic goes to 127.0.0.1; every wait is bounded. Usage:
  python3 bench/supervision.py --mend target/release/mend --demo target/release/mend-demo
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_pid(port, timeout=0.05):
    """The pid that answers GET / on port, or None."""
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


def wait_new_pid(port, old, timeout):
    """Polls every millisecond until a pid other than `old` answers; returns seconds waited or None."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        pid = demo_pid(port)
        if pid is not None and pid != old:
            return time.monotonic() - start, pid
        time.sleep(0.001)
    return None, None


def wait_healthy(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = demo_pid(port, timeout=0.5)
        if pid:
            return pid
        time.sleep(0.01)
    raise RuntimeError(f"nothing healthy on port {port} after {timeout}s")


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Tool:
    """A supervisor under test: starts, supervises one demo or N idle services, stops."""

    name = "?"

    def __init__(self, workdir, args):
        self.workdir = workdir
        self.args = args
        self.process = None

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.cleanup()

    def cleanup(self):
        pass

    def supervisor_pid(self):
        return self.process.pid


class Shell(Tool):
    name = "shell loop"

    def start_demo(self, port):
        script = f"while true; do {self.args.demo} --port {port} >/dev/null 2>&1; done"
        self.process = subprocess.Popen(["sh", "-c", script], start_new_session=True)

    def stop(self):
        if self.process:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Mend(Tool):
    name = "mend"

    def run(self, services):
        api = free_port()
        config = os.path.join(self.workdir, "mend.toml")
        with open(config, "w") as f:
            f.write(f'[api]\nlisten = "127.0.0.1:{api}"\n' + services)
        self.process = subprocess.Popen(
            [self.args.mend, "run", "-c", config, "--state-dir", os.path.join(self.workdir, "state"), "--log", "warn"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_demo(self, port):
        # Crashes here are independent events half a second apart, not a crash loop: with the default
        # reset_after (10s) the back-off would rightly slow the restarts down, which is not what this
        # measures; twenty crashes within a minute would also exceed the default restart limit (10 within
        # 5m), which gives up on purpose. Everything else is default.
        self.run(
            f'[service.demo]\ncommand = ["{self.args.demo}", "--port", "{{port}}"]\nports = "{port}"\n'
            f'[service.demo.liveness]\nhttp = "http://127.0.0.1:{{port}}/health"\n'
            f'[service.demo.backoff]\nreset_after = "{self.args.settle / 2}s"\n'
            f'[service.demo.restart_limit]\nmax_restarts = 1000\n'
        )

    def start_idle(self, n):
        services = "".join(f'[service.idle{i}]\ncommand = ["sleep", "{100000 + i}"]\n' for i in range(n))
        if self.args.with_policies:
            # Healing configured as a user would: policies on the built-in diagnoses, a hook and a
            # notification target (nothing fires while idle: this measures what configuring them costs).
            services += (
                '[healing]\nmode = "auto"\nverify = "30s"\n'
                '[hook.page]\ncommand = ["true"]\n'
                '[notify.ops]\nurl = "http://127.0.0.1:9/hooks/mend"\n'
                '[[heal]]\nwhen = "crashed"\nactions = ["hook page"]\n'
                '[[heal]]\nwhen = "hung"\nactions = ["restart", "notify ops", "escalate"]\n'
                '[[heal]]\nwhen = "unhealthy"\nactions = ["restart", "escalate"]\n'
                '[[heal]]\nwhen = "memory_exhaustion"\nactions = ["restart", "notify ops"]\n'
            )
        self.run(services)


class Supervisord(Tool):
    name = "supervisord"

    def run(self, programs):
        config = os.path.join(self.workdir, "supervisord.conf")
        with open(config, "w") as f:
            f.write(
                f"[supervisord]\nnodaemon=true\nlogfile={self.workdir}/supervisord.log\n"
                f"pidfile={self.workdir}/supervisord.pid\nchildlogdir={self.workdir}\n" + programs
            )
        self.process = subprocess.Popen(
            [shutil.which("supervisord"), "-c", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def start_demo(self, port):
        self.run(
            f"[program:demo]\ncommand={self.args.demo} --port {port}\nautorestart=true\nstartsecs=0\n"
            "startretries=100000\nstopasgroup=true\nkillasgroup=true\n"
        )

    def start_idle(self, n):
        self.run("".join(f"[program:idle{i}]\ncommand=sleep {100000 + i}\nautorestart=true\n" for i in range(n)))


class Monit(Tool):
    name = "monit"

    def run(self, checks):
        config = os.path.join(self.workdir, "monitrc")
        with open(config, "w") as f:
            f.write(
                f"set daemon 1\nset logfile {self.workdir}/monit.log\nset pidfile {self.workdir}/monit.pid\n"
                f"set idfile {self.workdir}/monit.id\nset statefile {self.workdir}/monit.state\n" + checks
            )
        os.chmod(config, 0o600)
        self.process = subprocess.Popen(
            [shutil.which("monit"), "-I", "-c", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def check(self, name, command, extra=""):
        pidfile = f"{self.workdir}/{name}.pid"
        return (
            f"check process {name} with pidfile {pidfile}\n"
            f"  start program = \"/bin/sh -c '{command} >/dev/null 2>&1 & echo $! > {pidfile}'\"\n"
            f"  stop program = \"/bin/sh -c 'kill -9 $(cat {pidfile})'\"\n{extra}"
        )

    def start_demo(self, port):
        extra = f'  if failed port {port} protocol http request "/health" then restart\n'
        self.run(self.check("demo", f"{self.args.demo} --port {port}", extra))

    def start_idle(self, n):
        self.run("".join(self.check(f"idle{i}", f"sleep {100000 + i}") for i in range(n)))

    def cleanup(self):
        for name in os.listdir(self.workdir):
            if name.endswith(".pid") and name != "monit.pid":
                try:
                    os.kill(int(open(os.path.join(self.workdir, name)).read().strip()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def crash_latencies(tool_class, args):
    with tempfile.TemporaryDirectory() as workdir:
        tool = tool_class(workdir, args)
        port = free_port()
        tool.start_demo(port)
        try:
            pid = wait_healthy(port)
            time.sleep(1.0)
            latencies = []
            for _ in range(args.crashes):
                os.kill(pid, signal.SIGKILL)
                took, new_pid = wait_new_pid(port, pid, timeout=30)
                if took is None:
                    break
                latencies.append(took * 1000)
                pid = new_pid
                # Let the replacement settle, and stay clear of any restart-rate limit of the tool.
                time.sleep(args.settle)
            return latencies
        finally:
            tool.stop()


def hang_latencies(tool_class, args):
    with tempfile.TemporaryDirectory() as workdir:
        tool = tool_class(workdir, args)
        port = free_port()
        tool.start_demo(port)
        try:
            pid = wait_healthy(port)
            time.sleep(1.5)
            latencies = []
            for _ in range(args.hangs):
                os.kill(pid, signal.SIGSTOP)
                took, new_pid = wait_new_pid(port, pid, timeout=args.hang_timeout)
                if took is None:
                    os.kill(pid, signal.SIGKILL)
                    latencies.append(None)
                    break
                latencies.append(took * 1000)
                pid = new_pid
                time.sleep(args.settle + 1.0)
            return latencies
        finally:
            tool.stop()


def idle_footprint(tool_class, args):
    with tempfile.TemporaryDirectory() as workdir:
        tool = tool_class(workdir, args)
        tool.start_idle(10)
        try:
            time.sleep(5)
            pid = tool.supervisor_pid()
            cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
            rss_samples = []
            while time.monotonic() - t0 < args.idle_seconds:
                time.sleep(1)
                rss_samples.append(proc_rss_bytes(pid))
            cpu = (proc_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
            return {"rss_mib": statistics.median(rss_samples) / 1048576, "cpu_percent": cpu}
        finally:
            tool.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mend", default="target/release/mend")
    parser.add_argument("--demo", default="target/release/mend-demo")
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--hangs", type=int, default=5)
    parser.add_argument("--hang-timeout", type=float, default=60)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--only", choices=["crash", "hang", "idle"], action="append")
    parser.add_argument("--tools", help="comma-separated subset: shell,mend,supervisord,monit")
    parser.add_argument("--with-policies", action="store_true", help="mend's idle run configures healing policies")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    args.mend, args.demo = os.path.abspath(args.mend), os.path.abspath(args.demo)
    parts = args.only or ["crash", "hang", "idle"]
    wanted = set(args.tools.split(",")) if args.tools else None

    def chosen(tools):
        return [tool for tool in tools if wanted is None or tool.name.split()[0] in wanted]

    results = {}
    if "crash" in parts:
        results["crash"] = {}
        for tool in chosen([Shell, Mend, Supervisord, Monit]):
            latencies = crash_latencies(tool, args)
            results["crash"][tool.name] = latencies
            print(f"crash->healthy {tool.name:12} n={len(latencies):3} median={statistics.median(latencies):8.1f} ms "
                  f"p95={percentile(latencies, 95):8.1f} ms", flush=True)
    if "hang" in parts:
        results["hang"] = {}
        for tool in chosen([Mend, Supervisord, Monit]):
            latencies = hang_latencies(tool, args)
            results["hang"][tool.name] = latencies
            done = [x for x in latencies if x is not None]
            if done and len(done) == len(latencies):
                print(f"hang->healthy  {tool.name:12} n={len(done):3} median={statistics.median(done):8.1f} ms "
                      f"max={max(done):8.1f} ms", flush=True)
            else:
                print(f"hang->healthy  {tool.name:12} not replaced within {args.hang_timeout:.0f} s", flush=True)
    if "idle" in parts:
        results["idle"] = {}
        for tool in chosen([Mend, Supervisord, Monit]):
            footprint = idle_footprint(tool, args)
            results["idle"][tool.name] = footprint
            print(f"idle x10       {tool.name:12} rss={footprint['rss_mib']:6.1f} MiB cpu={footprint['cpu_percent']:6.3f} % of a core",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
