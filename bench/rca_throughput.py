#!/usr/bin/env python3
"""Replay throughput: `mend replay` over a directory of cases beside promtool backfilling the same files.

`mend replay` parses each case's metrics.om, appends every sample to the series store in time order,
runs the detect stage once per timestamp and diagnoses what it found. The anchor,
`promtool tsdb create-blocks-from openmetrics`, parses the same files and writes them as TSDB blocks
(Prometheus' own backfill; it detects nothing). Both run one case at a time on one core's worth of work;
they take turns, round by round, so that the machine's noise falls on both alike.

Usage:
  cargo build --release
  python3 bench/rca_throughput.py [--cases ../shared/rca] [--rounds 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MEND = os.path.join(HERE, "..", "target", "release", "mend")


def case_files(cases_dir):
    found = []
    for root, _dirs, files in os.walk(cases_dir):
        if "metrics.om" in files:
            found.append(os.path.join(root, "metrics.om"))
    return sorted(found)


def count_samples(files):
    total = 0
    for path in files:
        with open(path) as f:
            total += sum(1 for line in f if not line.startswith("#"))
    return total


def time_mend(cases_dir):
    start = time.perf_counter()
    out = subprocess.run([MEND, "replay", cases_dir, "--json"], capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"mend replay failed:\n{out.stderr}")
    return elapsed


def time_promtool(files):
    start = time.perf_counter()
    for path in files:
        with tempfile.TemporaryDirectory() as out_dir:
            done = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", path, out_dir],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise SystemExit(f"promtool failed on {path}:\n{done.stderr}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=os.path.join(HERE, "..", "..", "shared", "rca"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("promtool"):
        raise SystemExit("promtool not found (apt-get install prometheus)")
    files = case_files(args.cases)
    samples = count_samples(files)
    mend, promtool = [], []
    for _ in range(args.rounds):
        mend.append(time_mend(args.cases))
        promtool.append(time_promtool(files))
    m, p = statistics.median(mend), statistics.median(promtool)
    print(f"{len(files)} cases, {samples} samples, median of {args.rounds} rounds")
    print(f"mend replay (parse, store, detect, diagnose): {m:.2f} s, {samples / m:,.0f} samples/s")
    print(f"promtool create-blocks-from openmetrics (parse, write blocks): {p:.2f} s, {samples / p:,.0f} samples/s")
    print(f"ratio mend / promtool time: {m / p:.2f}")


if __name__ == "__main__":
    main()
