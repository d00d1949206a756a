#!/usr/bin/env python3
"""Live diagnosis cost: what one incident's diagnosis costs a daemon supervising N services, and what the
daemon costs at idle meanwhile.

Starts `mend run` (release build) with N services in a chain (`svc-000` depends on `svc-001`, ... on
`svc-N-1`), each a `sleep` process behind its own mend proxy (every second the runners and the proxy
sampler record their series: 3 replica series and the proxy's counters per service), waits until the
baseline has filled (`--warmup`, 10 min 15 s by default: the live baseline plus the lookback), measures
mend's CPU over the last `--idle` seconds of that wait (from /proc/PID/stat), then posts an Alertmanager
alert on the chain's head. The incident asks for the head and what it calls: the request is capped at
32 services. mend logs `incident diagnosed` with the services, series and points gathered and the time
spent gathering (read lock on the series store) and diagnosing (the pure ranking and decision procedure,
plus the healer's step); the script prints them. Loopback only; the daemon is stopped at the end.

    cargo build --release -p mend
    python3 bench/diagnose_live.py --services 100 [--mend target/debug/mend]
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                    break
        if ok:
            return first


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=615.0, help="seconds before the alert")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measured before it")
    parser.add_argument("--mend", default=os.path.join(ROOT, "target/release/mend"), help="the mend binary")
    args = parser.parse_args()

    mend = args.mend
    api_port = free_port()
    proxies = free_port(args.services)
    replicas = free_port(args.services)
    lines = [f'[api]\nlisten = "127.0.0.1:{api_port}"\n']
    for idx in range(args.services):
        name = f"svc-{idx:03}"
        depends = f'depends_on = ["svc-{idx + 1:03}"]\n' if idx + 1 < args.services else ""
        lines.append(
            f'[service.{name}]\ncommand = ["sleep", "3600"]\nports = "{replicas + idx}"\n{depends}'
            f'[service.{name}.proxy]\nlisten = "127.0.0.1:{proxies + idx}"\n'
        )
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "mend.toml")
        with open(config, "w") as f:
            f.write("".join(lines))
        log_path = os.path.join(tmp, "mend.log")
        with open(log_path, "w") as log:
            daemon = subprocess.Popen(
                [mend, "run", "-c", config, "--state-dir", os.path.join(tmp, "state")],
                stdout=log,
                stderr=log,
                env={**os.environ, "MEND_LOG": "info"},
            )
        try:
            api = f"http://127.0.0.1:{api_port}"
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    urllib.request.urlopen(api + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            started = time.time()
            time.sleep(max(0.0, args.warmup - args.idle))
            cpu_before, wall_before = cpu_seconds(daemon.pid), time.time()
            time.sleep(args.idle)
            cpu_after, wall_after = cpu_seconds(daemon.pid), time.time()
            idle_share = (cpu_after - cpu_before) / (wall_after - wall_before)
            alert = {
                "version": "4",
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {"alertname": "Slow", "service": "svc-000"}, "annotations": {}}],
            }
            request = urllib.request.Request(
                api + "/api/v1/alerts", data=json.dumps(alert).encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=5).read()
            found = None
            deadline = time.time() + 30
            while time.time() < deadline and not found:
                with open(log_path) as f:
                    found = re.search(r"incident diagnosed .*", f.read())
                time.sleep(0.2)
            if not found:
                sys.exit("no `incident diagnosed` line in mend's log")
            fields = dict(re.findall(r"(\w+)=(\d+)", found.group(0)))
            print(json.dumps({
                "services_supervised": args.services,
                "ran_for_s": round(time.time() - started),
                "idle_cpu_share_of_one_core": round(idle_share, 4),
                "services_gathered": int(fields["n_services"]),
                "series": int(fields["n_series"]),
                "points": int(fields["n_points"]),
                "gather_ms": int(fields["gather_us"]) / 1000,
                "diagnose_ms": int(fields["diagnose_us"]) / 1000,
            }))
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()


if __name__ == "__main__":
    main()
