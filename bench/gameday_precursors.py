#!/usr/bin/env python3
"""Precursor warnings on a game day (issue 15, item 5): precision and lead time gained, measured with the
real runner on examples/gamedays/leak-repeat.toml (leaks that run to the memory limit, and bursts that
give the memory back).

Runs `mend gameday FILE --out DIR --json`, then reads the signals of the run from the store the runner
leaves in DIR/NAME.mend/state/mend.db (mend is stopped by then; the store keeps every transition):
- failures: firing `diagnosis` transitions of the service, those less than the precursor window after
  the previous one being the same incident (as the model counts them);
- warnings: firing `precursor` transitions; decided by their resolution ("failed ... after" = followed,
  "no failure" = missed); precision = followed / decided;
- lead gained: from a warning to the first failure after it within the window;
- failures warned: incidents with a warning in the window before them / incidents after the first
  warning;
- for comparison, the same for the cue's own signal (what a `[[heal]]` policy on it would already get).

Usage: python3 bench/gameday_precursors.py [--mend target/debug/mend]
           [--scenario examples/gamedays/leak-repeat.toml] [--window 30] [--out DIR | --from DIR]
"""

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile


def incidents_of(failures, window):
    incidents = []
    for at in sorted(failures):
        if not incidents or at - incidents[-1][-1] >= window:
            incidents.append([at])
        else:
            incidents[-1].append(at)
    return [group[0] for group in incidents]


def leads(starts, incidents, window):
    out = []
    for at in starts:
        after = [i for i in incidents if 0 <= i - at <= window]
        if after:
            out.append(after[0] - at)
    return out


def spread(values):
    if not values:
        return "-"
    return f"median {statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f} s, n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mend", default="target/debug/mend")
    parser.add_argument("--scenario", default="examples/gamedays/leak-repeat.toml")
    parser.add_argument("--service", default="web")
    parser.add_argument("--window", type=float, default=30.0, help="the scenario's [learn] precursor_window, s")
    parser.add_argument("--out", help="where the runner writes (default: a temporary directory)")
    parser.add_argument("--from", dest="done", help="measure a run already done with --out DIR instead")
    args = parser.parse_args()
    if args.done:
        out = args.done
        name = os.path.splitext(os.path.basename(args.scenario))[0]
        with open(os.path.join(out, f"{name}.json")) as f:
            report = json.load(f)
    else:
        out = args.out or tempfile.mkdtemp(prefix="gameday-precursors-")
        run = subprocess.run(
            [args.mend, "gameday", args.scenario, "--out", out, "--json"], capture_output=True, text=True, check=False
        )
        # 3: an SLO failed, which says nothing about the warnings.
        if run.returncode not in (0, 3):
            print(run.stderr, file=sys.stderr)
            return 1
        report = json.loads(run.stdout)
    db = os.path.join(out, f"{report['scenario']}.mend", "state", "mend.db")
    rows = sqlite3.connect(db).execute(
        "SELECT at_ms, state, kind, name, labels, evidence FROM signals WHERE service = ? ORDER BY at_ms, id",
        (args.service,),
    )
    signals = [
        {"at": at / 1000, "state": state, "kind": kind, "name": name, "labels": json.loads(labels), "evidence": ev}
        for at, state, kind, name, labels, ev in rows
    ]
    # The run's start: the first fault's injection (a `chaos_started` event) less its offset in the report.
    (first_fault_ms,) = sqlite3.connect(db).execute("SELECT min(at_ms) FROM events WHERE kind = 'chaos_started'").fetchone()
    t0 = first_fault_ms / 1000 - report["faults"][0]["at"]
    failures = [s["at"] for s in signals if s["kind"] == "diagnosis" and s["state"] == "firing"]
    incidents = incidents_of(failures, args.window)
    warnings = [s for s in signals if s["kind"] == "precursor" and s["state"] == "firing"]
    starts = [w["at"] for w in warnings]
    ends = [s for s in signals if s["kind"] == "precursor" and s["state"] == "resolved"]
    followed = sum(1 for e in ends if " failed " in e["evidence"])
    missed = sum(1 for e in ends if "no failure" in e["evidence"])
    cues = sorted({(w["labels"].get("cue_kind", "?"), w["labels"].get("cue_name", "?")) for w in warnings})
    first = min(starts) if starts else None
    later = [i for i in incidents if first is not None and i > first]
    warned = [i for i in later if any(0 <= i - at <= args.window for at in starts)]

    if report["requests"] is None:
        print(f"run: {report['duration_s']:.0f} s, requests not counted (no built-in load)")
    else:
        print(f"run: {report['duration_s']:.0f} s, {report['requests']} requests ({report['failed_requests']} failed)")
    print("per fault (s after the start): fault, first warning after it, first failure after it")
    starts_of_faults = [fault["at"] for fault in report["faults"]] + [report["duration_s"]]
    for fault, end in zip(report["faults"], starts_of_faults[1:]):
        inside = lambda at: fault["at"] <= at - t0 < end
        warning = next((w - t0 for w in starts if inside(w)), None)
        failure = next((i - t0 for i in incidents if inside(i)), None)
        shown = lambda at: "-" if at is None else f"{at:.1f}"
        print(f"  {fault['at']:6.1f} {fault['fault']:<12} warning {shown(warning):>6}  failure {shown(failure):>6}")
    print(f"failures (diagnosis firing): {len(failures)} in {len(incidents)} incidents at "
          + ", ".join(f"{i - t0:.0f}" for i in incidents) + " s")
    print(f"warnings: {len(warnings)} at " + ", ".join(f"{w - t0:.0f}" for w in starts) + " s; cues: "
          + ", ".join(f"{k} {n}" for k, n in cues))
    decided = followed + missed
    print(f"precision: {followed}/{decided} = {followed / decided:.2f}" if decided else "precision: - (none decided)")
    print(f"lead gained, warning -> failure: {spread(leads(starts, incidents, args.window))}")
    if later:
        print(f"incidents warned (after the first warning): {len(warned)}/{len(later)}")
    for kind, name in cues:
        sightings = [s["at"] for s in signals if s["kind"] == kind and s["name"] == name and s["state"] == "firing"]
        cue_leads = leads(sightings, incidents, args.window)
        print(f"the cue itself ({kind} {name}): {len(sightings)} firings, {len(cue_leads)} followed within the "
              f"window, lead {spread(cue_leads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
