#!/usr/bin/env bash
# Time from deploying a bad release (half its answers 500) to the rollback complete, and requests failed,
# under steady loopback load (4 keep-alive clients through mend's proxy): the figure in BENCHMARKS.md.
# Runs the ignored end-to-end benchmark in crates/mend/tests/rollout.rs against real mend-demo replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p mend --test rollout -- --ignored --nocapture --test-threads 1 bench_time_to_roll_back_a_bad_release 2>&1 \
  | grep -E '(^|\.\.\. )(bad|subtle|release)\b' | sed 's/^test .*\.\.\. //'
