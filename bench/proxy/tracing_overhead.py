#!/usr/bin/env python3
"""CPU per request of mend-proxy with tracing off, at 1 % and at 100 %, interleaved round by round.

The throughput table of bench.py runs each proxy once; on a shared machine its CPU-per-request figures
move ±15 % between runs, more than the overhead asked about. Here the three configurations alternate in
each round (same load on the machine for each), and the median of the per-round ratios to "off" is
reported. Needs what bench.py needs (wrk, the release builds of mend-demo and the proxy example).

    python3 bench/proxy/tracing_overhead.py [--rounds 7] [--duration 5] [--workers 1] [--zero]

`--zero` measures ratio 0 (the per-request hook, no span kept) beside 1 % instead of 100 %.
"""
import argparse
import statistics
import sys
import tempfile

import bench

CONFIGS = (("off", []), ("1 %", ["--trace-ratio", "0.01"]), ("100 %", ["--trace-ratio", "1.0"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per measurement")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--zero", action="store_true", help="off, 0 %% and 1 %% (instead of off, 1 %%, 100 %%)")
    parser.add_argument("--demo", default=bench.os.path.join(bench.ROOT, "target/release/mend-demo"))
    args = parser.parse_args()
    global CONFIGS
    if args.zero:
        CONFIGS = (("off", []), ("0 %", ["--trace-ratio", "0.0"]), ("1 %", ["--trace-ratio", "0.01"]))
    for label, extra in CONFIGS:
        bench.MEND_BUILDS[label] = bench.MEND_BUILDS["mend-proxy"]
        bench.MEND_ARGS[label] = extra
    ratios = {label: [] for label, _ in CONFIGS[1:]}
    cpu = {label: [] for label, _ in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        ups = [bench.free_port(), bench.free_port()]
        replicas = [bench.Replica(args.demo, port) for port in ups]
        for replica in replicas:
            replica.start()
        try:
            for round_idx in range(args.rounds):
                per_round = {}
                for label, _ in CONFIGS:
                    proxy = bench.make_proxy(label, args.workers, ups, tmp)
                    proxy.start()
                    try:
                        bench.wrk(proxy.port, 1, args.connections)
                        before = bench.cpu_seconds(proxy.pids())
                        result = bench.wrk(proxy.port, args.duration, args.connections)
                        after = bench.cpu_seconds(proxy.pids())
                    finally:
                        proxy.stop()
                    per_round[label] = (after - before) / result["requests"] * 1e6
                    cpu[label].append(per_round[label])
                for label in ratios:
                    ratios[label].append(per_round[label] / per_round["off"])
                print(f"round {round_idx + 1}: " + ", ".join(f"{k} {v:.1f} us" for k, v in per_round.items()),
                      file=sys.stderr)
        finally:
            for replica in replicas:
                replica.stop()
    print(f"\n| tracing | CPU µs/req (median of {args.rounds}) | ratio to off (median of per-round ratios) | range |")
    print("| --- | --- | --- | --- |")
    print(f"| off | {statistics.median(cpu['off']):.1f} | 1.00× | |")
    for label, values in ratios.items():
        print(f"| {label} | {statistics.median(cpu[label]):.1f} | {statistics.median(values):.2f}× "
              f"| {min(values):.2f}–{max(values):.2f}× |")


if __name__ == "__main__":
    main()
