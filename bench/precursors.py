#!/usr/bin/env python3
"""Precision of precursor warnings and lead time gained (issue 15, item 5), on a live mend.

One service, `orders`, logs `ERROR pool exhausted ...` 6 s after each start. Two processes in three then
crash 6 s after the line; every third (MEND_GENERATION % 3 == 0) recovers: it crashes 22 s later with
no line before it (a failure no precursor announces, and a sighting no failure follows). A `[[rule]]`
fires on the template's count, so the cue is "rule PoolExhausted"; `precursor_window` is 10 s.

After the run, from `GET /api/v1/signals` (transitions of every condition):
- warnings: `precursor` firing transitions; followed: those whose resolution says the service failed;
- precision = followed / decided warnings; lead gained = from the warning to the crash it announced;
- recall = crashes with a warning firing just before / all crashes after the first warning.

Usage: python3 bench/precursors.py [--mend target/debug/mend] [--seconds 240]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime

CONFIG = r"""[api]
listen = "127.0.0.1:{port}"

[learn]
precursor_window = "10s"

[service.orders]
command = ["sh", "-c", "sleep 6; echo 'ERROR pool exhausted: 0 of 16 connections free'; if [ $((MEND_GENERATION % 3)) -eq 0 ]; then sleep 16; echo 'INFO pool recovered'; sleep 6; exit 3; fi; sleep 6; exit 3"]

[service.orders.backoff]
initial = "100ms"
max = "200ms"

[service.orders.restart_limit]
max_restarts = 1000
within = "60s"

[[rule]]
name = "PoolExhausted"
expr = 'count_over_time(mend_log_template_total{{service="orders",level="error"}}[5s]) > 0'
"""


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mend", default="target/debug/mend")
    parser.add_argument("--seconds", type=int, default=240)
    parser.add_argument("--port", type=int, default=19571)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mend.toml")
        with open(path, "w") as f:
            f.write(CONFIG.format(port=args.port))
        daemon = subprocess.Popen(
            [args.mend, "run", "-c", path, "--state-dir", os.path.join(tmp, "state")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(args.seconds)
            url = f"http://127.0.0.1:{args.port}/api/v1/signals?service=orders&limit=10000"
            signals = json.load(urllib.request.urlopen(url, timeout=10))["signals"]
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    signals.sort(key=lambda s: parse(s["at"]))
    warnings = [s for s in signals if s["kind"] == "precursor" and s["state"] == "firing"]
    ends = [s for s in signals if s["kind"] == "precursor" and s["state"] == "resolved"]
    crashes = [parse(s["at"]) for s in signals if s["name"] == "crashed" and s["state"] == "firing"]
    followed = [e for e in ends if "failed" in e["evidence"]]
    missed = [e for e in ends if "no failure" in e["evidence"]]
    leads = []
    for warning in warnings:
        at = parse(warning["at"])
        after = [c for c in crashes if 0 < c - at <= 10]
        if after:
            leads.append(after[0] - at)
    first = parse(warnings[0]["at"]) if warnings else None
    later = [c for c in crashes if first is not None and c > first]
    warned = [c for c in later if any(0 < c - parse(w["at"]) <= 10 for w in warnings)]
    decided = len(followed) + len(missed)
    print(f"run: {args.seconds} s, crashes: {len(crashes)}, warnings: {len(warnings)}")
    print(f"precision: {len(followed)}/{decided} = {len(followed) / decided:.2f}" if decided else "precision: -")
    if leads:
        print(
            f"lead gained: median {statistics.median(leads):.2f} s, min {min(leads):.2f} s, max {max(leads):.2f} s"
        )
    if later:
        print(f"crashes warned (after the first warning): {len(warned)}/{len(later)} = {len(warned) / len(later):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
