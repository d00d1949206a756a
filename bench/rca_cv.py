#!/usr/bin/env python3
"""Cross-validated accuracy of `mend replay` on a directory of labelled RCA cases.

mend's method has one knob chosen by looking at the development set (the `shift` detector's
sensitivity, which sets the |z| a point must reach to count: 3 - 2 * sensitivity) and four constants
of the ranking set while building it (two-point persistence, a scale floor of 1 % of the median, a
5-minute lookback before the first signal, an hour of baseline). This script runs the replay over a
grid of all five, then reports:

* the default (the shipped values, sensitivity 0.5),
* the best grid point on all cases (tuned on the very cases it is scored on: optimistic),
* k-fold cross-validation by case: for each fold, the grid point with the best Avg@5 on the other
  folds (ties: AC@1, then nearest to the defaults) is scored on the held-out fold; the held-out
  cases are pooled,
* leave-one-fault-type-out: tuned on two fault types, scored on the third, pooled.

The diagnosing runs never read the labels; this script reads them from case.json to score. Scoring
follows ../shared/rca/README.md section 5.

Usage:
  cargo build --release
  python3 bench/rca_cv.py [--cases ../shared/rca] [--folds 5] [--quick] [--json FILE] [--mend PATH]

The scores do not depend on the build profile (the same code, no timing in it); a debug build
(`--mend target/debug/mend`) is slower only.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MEND = os.path.join(HERE, "..", "target", "release", "mend")

DEFAULT = {"sensitivity": 0.5, "persist": 2, "relative_floor": 0.01, "lookback": "5m", "baseline": "1h"}
GRID = {
    "sensitivity": [0.0, 0.25, 0.5, 0.75],
    "persist": [1, 2, 3],
    "relative_floor": [0.001, 0.01, 0.05],
    "lookback": ["0s", "5m", "10m"],
    "baseline": ["30m", "1h"],
}
QUICK = {"sensitivity": [0.25, 0.5, 0.75], "persist": [1, 2, 3], "relative_floor": [0.01], "lookback": ["5m"],
         "baseline": ["1h"]}


def labels(cases_dir):
    found = {}
    for root, _dirs, files in os.walk(cases_dir):
        if "case.json" in files:
            with open(os.path.join(root, "case.json")) as f:
                case = json.load(f)
            if case.get("root_cause_service"):
                found[case["id"]] = case
    return found


def run(mend, cases_dir, point, workdir):
    config = os.path.join(workdir, f"s{point['sensitivity']}.toml")
    with open(config, "w") as f:
        f.write('[[detect]]\nname = "replay"\nseries = \'{__name__=~".+"}\'\ndetector = "shift"\n'
                f"sensitivity = {point['sensitivity']}\n")
    args = [mend, "replay", cases_dir, "--json", "-c", config]
    for key in ("persist", "relative_floor", "lookback", "baseline"):
        args += ["--set", f"{key}={point[key]}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    rankings = {}
    for line in out.stdout.splitlines():
        row = json.loads(line)
        rankings[row["id"]] = row["ranking"]
    return rankings


def position(ranking, answer):
    top = []
    for service in ranking:
        if service not in top:
            top.append(service)
        if len(top) == 5:
            break
    return top.index(answer) if answer in top else None


def score(positions):
    """AC@1, AC@3, Avg@5 of a list of positions (None: not in the top 5)."""
    n = len(positions)
    if n == 0:
        return (0.0, 0.0, 0.0)
    ac = [sum(1 for p in positions if p is not None and p < k) / n for k in range(1, 6)]
    return (ac[0], ac[2], sum(ac) / 5)


def distance_to_default(point):
    keys = list(GRID)
    return sum(0 if point[k] == DEFAULT[k] else 1 for k in keys)


def best_point(points, results, cases, truth):
    def key(point):
        pos = [position(results[point_id(point)].get(c, []), truth[c]["root_cause_service"]) for c in cases]
        ac1, _ac3, avg5 = score(pos)
        return (avg5, ac1, -distance_to_default(point))
    return max(points, key=key)


def point_id(point):
    return tuple(sorted(point.items()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=os.path.join(HERE, "..", "..", "shared", "rca"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--mend", default=MEND, help="the mend binary (default: the release build)")
    parser.add_argument("--quick", action="store_true", help="a small grid (9 points)")
    parser.add_argument("--json", help="write every grid point's per-case positions here")
    args = parser.parse_args()
    truth = labels(args.cases)
    cases = sorted(truth)
    grid = QUICK if args.quick else GRID
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if DEFAULT not in points:
        points.append(dict(DEFAULT))
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for idx, point in enumerate(points):
            print(f"[{idx + 1}/{len(points)}] {point}", file=sys.stderr, flush=True)
            results[point_id(point)] = run(args.mend, args.cases, point, workdir)

    def positions(point, subset):
        return [position(results[point_id(point)].get(c, []), truth[c]["root_cause_service"]) for c in subset]

    rows = []
    rows.append(("default (shipped), no tuning", len(cases), score(positions(DEFAULT, cases)), str(DEFAULT)))
    tuned = best_point(points, results, cases, truth)
    rows.append(("best grid point on all cases (optimistic)", len(cases), score(positions(tuned, cases)), str(tuned)))

    held_out = []
    chosen = []
    for fold in range(args.folds):
        test = [c for i, c in enumerate(cases) if i % args.folds == fold]
        train = [c for c in cases if c not in test]
        point = best_point(points, results, train, truth)
        chosen.append(point)
        held_out += positions(point, test)
    rows.append((f"{args.folds}-fold cross-validation by case", len(held_out), score(held_out),
                 "; ".join(str(p) for p in chosen)))

    types = sorted({truth[c].get("fault_type", "?") for c in cases})
    held_out = []
    chosen = []
    per_type = []
    for fault in types:
        test = [c for c in cases if truth[c].get("fault_type") == fault]
        train = [c for c in cases if c not in test]
        point = best_point(points, results, train, truth)
        chosen.append(f"{fault}: {point}")
        pos = positions(point, test)
        per_type.append((fault, len(test), score(pos), score(positions(DEFAULT, test))))
        held_out += pos
    rows.append(("leave-one-fault-type-out", len(held_out), score(held_out), "; ".join(chosen)))

    print(f"{'':46} {'CASES':>5} {'AC@1':>5} {'AC@3':>5} {'Avg@5':>5}")
    for name, n, (ac1, ac3, avg5), _detail in rows:
        print(f"{name:46} {n:5} {ac1:5.2f} {ac3:5.2f} {avg5:5.2f}")
    print("\nleave-one-fault-type-out, per held-out type (tuned on the others | default):")
    for fault, n, (a1, a3, a5), (d1, d3, d5) in per_type:
        print(f"  {fault:20} {n:3}  {a1:.2f} {a3:.2f} {a5:.2f} | {d1:.2f} {d3:.2f} {d5:.2f}")
    print("\nchosen points:")
    for name, _n, _s, detail in rows:
        print(f"  {name}: {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"points": [{"point": p, "positions": dict(zip(cases, positions(p, cases)))} for p in points]},
                      f, indent=1)


if __name__ == "__main__":
    main()
