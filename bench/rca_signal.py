#!/usr/bin/env python3
"""What a fault does to the four metrics of the RCA cases: is the injected service visible at all?

An analysis, not a diagnosis: it reads the labels (`root_cause_service`, `root_cause_pod`,
`inject_time`) to ask where the answer could come from. It is why mend's ranking was left as it is for
network-delay faults (docs/diagnosis.md, section 5; BENCHMARKS.md, "Root-cause analysis").

Three questions, each told the injection time T, baseline = the hour before T, window = (T, T + 6 min]:

1. Ranking by a score, no tuning: for several per-series scores (the service's score is its strongest
   series'), AC@1 and Avg@5 per fault type. An upper bound for any ranking built on that score, since
   it is told the time and scored in-sample.
2. Fault against placebo, for network-delay cases: the injected service's strongest sustained robust
   deviation (two consecutive points beyond |z|, either direction) in the fault window, and in a placebo
   window 15 minutes before the injection (between two faults) scored the same way.
3. Direction: the mean robust z of the network bytes in/out of the injected service's pods, and of its
   callers' pods (from bench/rca/sock-shop.toml), fault against placebo. If a delay cut throughput, these
   would fall.
4. Replicas: for a delayed pod with a sibling, its share of the pair's bytes in (would the sibling take
   its traffic?), fault against placebo.

Usage: python3 bench/rca_signal.py [--cases ../shared/rca/sock-shop] [--graph bench/rca/sock-shop.toml]
"""

import argparse
import json
import math
import os
import re
import statistics
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = re.compile(r'(\w+)\{service="([^"]+)",pod="([^"]+)"\} (\S+) (\d+)$')
SHORT = {"cpu_usage_cores": "cpu", "memory_working_set_bytes": "mem",
         "network_receive_bytes_per_second": "rx", "network_transmit_bytes_per_second": "tx"}
WINDOW_S = 360
PLACEBO_S = 900


def load(case_dir):
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    series = {}
    with open(os.path.join(case_dir, "metrics.om")) as f:
        for line in f:
            m = SAMPLE.match(line.rstrip("\n"))
            if m:
                family, service, pod, value, ts = m.groups()
                series.setdefault((family, service, pod), []).append((int(ts), float(value)))
    return case, series


def quantile(values, q):
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    below = int(pos)
    above = min(below + 1, len(xs) - 1)
    return xs[below] + (xs[above] - xs[below]) * (pos - below)


def robust_zs(points, at):
    """z-scores of the window after `at` against the hour before it (median, IQR/1.349, 1 % floor)."""
    base = [v for t, v in points if at - 3600 <= t < at]
    after = [v for t, v in points if at < t <= at + WINDOW_S]
    if len(base) < 10 or len(after) < 3:
        return None
    median = quantile(base, 0.5)
    scale = max((quantile(base, 0.75) - quantile(base, 0.25)) / 1.349, 0.01 * abs(median), 1e-300)
    return [(v - median) / scale for v in after]


def sustained(zs, persist=2):
    """The largest |z| that `persist` consecutive points of one sign all reach (mend's rank.rs)."""
    best = 0.0
    for i in range(len(zs) - persist + 1):
        w = zs[i:i + persist]
        if all(z > 0 for z in w) or all(z < 0 for z in w):
            best = max(best, min(abs(z) for z in w))
    return best


SCORES = {
    "sustained |z|, 2 points (mend)": lambda zs: sustained(zs, 2),
    "sustained |z|, 3 points": lambda zs: sustained(zs, 3),
    "largest |z| (BARO-like)": lambda zs: max(abs(z) for z in zs),
    "|mean z|": lambda zs: abs(sum(zs) / len(zs)),
    "|median z|": lambda zs: abs(statistics.median(zs)),
    "largest drop (-z only)": lambda zs: max(0.0, -min(zs)),
}


def position(scores, answer):
    order = sorted(scores, key=lambda s: (-scores[s], s))
    return order.index(answer) if answer in order else None


def ac(positions):
    n = len(positions)
    acs = [sum(1 for p in positions if p is not None and p < k) / n for k in range(1, 6)]
    return acs[0], sum(acs) / 5


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=os.path.join(HERE, "..", "..", "shared", "rca", "sock-shop"))
    parser.add_argument("--graph", default=os.path.join(HERE, "rca", "sock-shop.toml"))
    args = parser.parse_args()
    with open(args.graph, "rb") as f:
        config = tomllib.load(f)
    callers = {}
    for service, spec in config.get("service", {}).items():
        for dep in spec.get("depends_on", []):
            callers.setdefault(dep, []).append(service)

    cases = sorted(d for d in os.listdir(args.cases) if os.path.isfile(os.path.join(args.cases, d, "case.json")))
    positions = {name: {} for name in SCORES}
    network = []
    for name in cases:
        case, series = load(os.path.join(args.cases, name))
        fault, root, at = case["fault_type"], case["root_cause_service"], case["inject_time"]
        per_service = {score: {} for score in SCORES}
        for (_family, service, _pod), points in series.items():
            zs = robust_zs(points, at)
            if zs is None:
                continue
            for score, fn in SCORES.items():
                per_service[score][service] = max(per_service[score].get(service, 0.0), fn(zs))
        for score in SCORES:
            positions[score].setdefault(fault, []).append(position(per_service[score], root))
            positions[score].setdefault("all", []).append(position(per_service[score], root))
        if fault == "network-delay":
            network.append((name, case, series))

    services = len({s for (_f, s, _p) in series})
    print(f"1. Told the injection time, ranked by one score (in-sample, no tuning); {len(cases)} cases, "
          f"{services} services (chance: AC@1 {1 / services:.2f}, Avg@5 {3 / services:.2f})")
    faults = sorted({f for p in positions.values() for f in p if f != "all"}) + ["all"]
    print(f"   {'score':34}" + "".join(f" {f + ' (' + str(len(positions[next(iter(SCORES))][f])) + ')':>22}" for f in faults))
    for score in SCORES:
        cells = "".join(f" {'%.2f / %.2f' % ac(positions[score][f]):>22}" for f in faults)
        print(f"   {score:34}{cells}")
    print("   (AC@1 / Avg@5)")
    print("   network-delay, position of the injected service (0 = first):")
    for score in SCORES:
        print(f"     {score:34} {positions[score]['network-delay']}")

    print("\n2. Network delay, the injected service's strongest sustained |z| (2 points, either direction):")
    print(f"   {'case':12} {'service':10} {'fault':>6} {'placebo':>8}   (placebo: the window {PLACEBO_S // 60} min before)")
    fault_scores, placebo_scores = [], []
    for name, case, series in network:
        root, at = case["root_cause_service"], case["inject_time"]
        row = []
        for window in (at, at - PLACEBO_S):
            best = 0.0
            for (_f, service, _p), points in series.items():
                zs = robust_zs(points, window) if service == root else None
                if zs:
                    best = max(best, sustained(zs))
            row.append(best)
        fault_scores.append(row[0])
        placebo_scores.append(row[1])
        print(f"   {name:12} {root:10} {row[0]:6.1f} {row[1]:8.1f}")
    print(f"   median {statistics.median(fault_scores):.1f} in the fault window, "
          f"{statistics.median(placebo_scores):.1f} in the placebo; "
          f"at least 3 (mend's anomaly threshold): {sum(s >= 3 for s in fault_scores)} of {len(fault_scores)} "
          f"against {sum(s >= 3 for s in placebo_scores)} of {len(placebo_scores)}")

    print("\n3. Network delay, mean robust z of network bytes in and out (per pod and direction), fault | placebo:")
    for label, pick in (("injected service", lambda root, s: s == root),
                        ("its callers", lambda root, s: s in callers.get(root, [])),
                        ("every other pod", lambda root, s: s != root)):
        cells = []
        for offset in (0, PLACEBO_S):
            means = []
            for _name, case, series in network:
                root, at = case["root_cause_service"], case["inject_time"] - offset
                for (family, service, _p), points in series.items():
                    if SHORT[family] in ("rx", "tx") and pick(root, service):
                        zs = robust_zs(points, at)
                        if zs:
                            means.append(sum(zs) / len(zs))
            below = sum(1 for m in means if m < 0) / len(means)
            cells.append(f"median {statistics.median(means):+.2f}, {below:.0%} below baseline (n={len(means)})")
        print(f"   {label:17} {cells[0]} | {cells[1]}")
    print("\n4. Network delay on a service with two pods: the delayed pod's share of the pair's bytes in,")
    print("   strongest sustained z (signed by the window's mean), fault | placebo:")
    for name, case, series in network:
        root, pod, at = case["root_cause_service"], case["root_cause_pod"], case["inject_time"]
        pods = {p: dict(points) for (f, s, p), points in series.items()
                if f == "network_receive_bytes_per_second" and s == root}
        if len(pods) != 2 or pod not in pods:
            continue
        sibling = next(p for p in pods if p != pod)
        share = sorted((t, v / (v + pods[sibling][t])) for t, v in pods[pod].items()
                       if t in pods[sibling] and v + pods[sibling][t] > 0)
        cells = []
        for window in (at, at - PLACEBO_S):
            zs = robust_zs(share, window)
            cells.append(math.copysign(sustained(zs), sum(zs)) if zs else float("nan"))
        print(f"   {name:12} {root:10} {cells[0]:+6.1f} | {cells[1]:+6.1f}")
    if math.isnan(statistics.median(fault_scores)):
        raise SystemExit("no network-delay case found")


if __name__ == "__main__":
    main()
