#!/usr/bin/env python3
"""Regenerates the Prometheus parity data for mend-query's tests/parity.rs.

Writes samples.om (an OpenMetrics file of a few series with known samples, all generated here,
deterministically), backfills it into a fresh TSDB with `promtool tsdb create-blocks-from
openmetrics`, starts Prometheus on that TSDB on 127.0.0.1:19090 (nothing scraped), runs every
query of QUERIES at every time of TIMES through /api/v1/query and those of RANGE_QUERIES through
/api/v1/query_range, stops Prometheus, and writes the
answers to prometheus_golden.json. The Rust test needs neither Prometheus nor this script.

Needs Debian's `prometheus` package (`apt-get install -y prometheus`: Prometheus and promtool
2.42). Run from anywhere: `python3 crates/mend-query/tests/data/golden.py`.

Prometheus 2.x and 3.x differ in two places the evaluator follows 3.x on: range windows and the
lookback are closed `[t - range, t]` in 2.x and left-open `(t - range, t]` in 3.x, and `rate`
applies the counter zero-point limit before (2.x) or after (3.x) the half-interval rule. The data
keeps clear of both: samples are every 15 s on whole seconds and query times are 7 s off that
grid (no point ever sits on a window edge), and the one counter that starts inside the windows
starts at 0 (both orders then extrapolate to the same zero point).
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "samples.om")
GOLDEN = os.path.join(HERE, "prometheus_golden.json")
ADDRESS = "127.0.0.1:19090"

T0 = 1_700_000_000  # seconds; the first sample
SCRAPE = 15  # seconds between samples
N_STEPS = 41  # samples at T0, T0 + 15, ..., T0 + 600

# Query times, 7 s off the sample grid: inside the data, after one series ended, after all data
# ended (within the 5 m lookback) and after the lookback ran out.
TIMES = [T0 + 97, T0 + 307, T0 + 457, T0 + 607, T0 + 787, T0 + 952]

QUERIES = [
    # Selectors and matchers.
    'http_requests_total',
    'http_requests_total{code=~"5.."}',
    'http_requests_total{code=~"5"}',
    'up{instance=~"a"}',
    'up{instance!~"a.*"}',
    'up{instance!="a"}',
    'up{env=""}',
    '{__name__=~"up|temperature", room!="cellar"}',
    'temperature offset 1m',
    'temperature offset -1m',
    'http_requests_total[1m]',
    # Range functions.
    'rate(http_requests_total[1m])',
    'rate(http_requests_total[5m])',
    'rate(http_requests_total[90s] offset 2m)',
    'increase(http_requests_total[5m])',
    'increase(http_requests_total[10m])',
    'irate(http_requests_total[1m])',
    'delta(temperature[2m])',
    'idelta(temperature[2m])',
    'deriv(temperature[3m])',
    'deriv(http_requests_total[5m])',
    'resets(http_requests_total[10m])',
    'changes(up[10m])',
    'changes(temperature[10m])',
    'avg_over_time(temperature[5m])',
    'min_over_time(temperature[5m])',
    'max_over_time(temperature[5m])',
    'sum_over_time(temperature[5m])',
    'count_over_time(temperature[5m])',
    'last_over_time(up[10m])',
    'quantile_over_time(0.9, temperature[5m])',
    'quantile_over_time(0.25, http_requests_total[5m])',
    'stddev_over_time(temperature[5m])',
    'absent_over_time(nonexistent{job="x"}[5m])',
    'absent_over_time(up[1m])',
    # Histograms.
    'histogram_quantile(0.9, rate(http_request_duration_seconds_bucket[5m]))',
    'histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))',
    'histogram_quantile(0.99, http_request_duration_seconds_bucket)',
    'histogram_quantile(0.05, http_request_duration_seconds_bucket)',
    'histogram_quantile(0.5, rate(queue_wait_seconds_bucket[5m]))',
    'histogram_quantile(1.5, http_request_duration_seconds_bucket)',
    # Instant functions.
    'abs(temperature - 21)',
    'clamp_min(temperature, 20)',
    'clamp_max(temperature, 20)',
    'absent(nonexistent{job="x", instance=~"a"})',
    'absent(up)',
    'time()',
    'vector(1)',
    'scalar(up{instance="a"})',
    'scalar(up)',
    'vector(scalar(up{instance="b"}))',
    # Aggregations.
    'sum(http_requests_total)',
    'sum by (job) (rate(http_requests_total[5m]))',
    'sum without (instance) (rate(http_requests_total[5m]))',
    'sum by (__name__) (up)',
    'avg by (job) (http_requests_total)',
    'min(temperature)',
    'max(temperature)',
    'count by (job) (up)',
    'count without (instance) (http_requests_total)',
    'stddev(http_requests_total)',
    'topk(2, http_requests_total)',
    'bottomk(1, http_requests_total)',
    'topk by (job) (1, http_requests_total)',
    'quantile(0.5, http_requests_total)',
    'quantile by (job) (0.9, http_requests_total)',
    # Binary operators.
    'http_requests_total * 2',
    '2 - http_requests_total',
    'http_requests_total / 1000 % 3',
    'temperature ^ 2',
    '-temperature',
    '2 ^ 3 ^ 2',
    '1 / 0',
    '-1 / 0',
    '0 / 0 + 1',
    '7 % -3',
    'time() - 1700000000',
    '(1 + 2) * 3 == bool 9',
    'up == 1',
    'up == bool 1',
    '1 > bool up',
    '0 < up',
    'temperature > 20',
    'temperature != 21',
    'temperature == temperature',
    'temperature != temperature',
    'temperature >= bool 20.5',
    'http_requests_total{code="500"} / ignoring(code) http_requests_total{code="200"}',
    'http_requests_total{code="500"} / on(job, instance) http_requests_total{code="200"}',
    'http_requests_total > on(job, instance) group_left up',
    'http_requests_total > bool ignoring(code) group_left up * 100',
    'sum by (job, instance) (rate(http_requests_total[5m])) / on(job) group_left sum by (job) (rate(http_requests_total[5m]))',
    'up * on(job, instance) group_right sum by (job, instance, code) (http_requests_total)',
    'up and on(instance) http_requests_total{code="500"}',
    'up or on(job) vector(0)',
    'up or http_requests_total',
    'http_requests_total unless on(instance) up == 0',
    'up unless up',
    'sum by (job) (rate(http_requests_total{code=~"5.."}[5m])) / sum by (job) (rate(http_requests_total[5m])) > 0.01',
    # Errors (the test checks that evaluation fails too, not the message).
    'http_requests_total + on(job) up',
    'http_requests_total{instance="a"} + ignoring(code) up',
    'up + on(job) group_left sum by (job, instance) (http_requests_total)',
]

# Range queries through /api/v1/query_range: (query, start, end, step), steps off the sample grid.
RANGE_QUERIES = [
    ('http_requests_total', T0 + 7, T0 + 907, 30),
    ('rate(http_requests_total[1m])', T0 + 7, T0 + 907, 30),
    ('up == 0', T0 + 7, T0 + 907, 60),
    ('sum by (job) (up)', T0 + 7, T0 + 907, 45),
    ('time()', T0 + 7, T0 + 907, 100),
    ('histogram_quantile(0.9, rate(http_request_duration_seconds_bucket[2m]))', T0 + 7, T0 + 907, 60),
    ('absent(up{instance="c"})', T0 + 7, T0 + 907, 60),
    ('topk(1, http_requests_total)', T0 + 7, T0 + 907, 60),
]


def series():
    """Every series: (name, labels, [(seconds, value)]). Values are exact in binary floating point."""
    out = []

    def steps(first=0, last=N_STEPS - 1):
        return range(first, last + 1)

    def counter(increments, reset_at=None, first=0, last=N_STEPS - 1, start=0.0):
        points, value = [], start
        for step in steps(first, last):
            if step > first:
                value += increments[step % len(increments)]
            if reset_at is not None and step == reset_at:
                value = 3.0
            points.append((T0 + SCRAPE * step, value))
        return points

    out.append(("http_requests_total", {"job": "api", "instance": "a", "code": "200"},
                counter([10, 25, 13, 31, 7], reset_at=25, start=100.0)))
    out.append(("http_requests_total", {"job": "api", "instance": "b", "code": "200"},
                counter([20, 20, 21, 19])))
    # Starts at step 10 from 0, inside most windows: extrapolation to the start stops at zero.
    out.append(("http_requests_total", {"job": "api", "instance": "a", "code": "500"},
                counter([1, 0, 2, 1], first=10)))
    # Ends at step 30 (T0 + 450): visible through the lookback until T0 + 750.
    out.append(("http_requests_total", {"job": "web", "instance": "c", "code": "200"},
                counter([5, 6], last=30, start=40.0)))

    kitchen = [20.0, 20.5, 21.0, 22.5, 21.0, 19.5, 21.0, 23.0, 22.0, 20.0, 21.0]
    out.append(("temperature", {"room": "kitchen"},
                [(T0 + SCRAPE * s, kitchen[s % len(kitchen)]) for s in steps()]))
    cellar = [12.0, 12.25, 12.5, 12.25]
    out.append(("temperature", {"room": "cellar"},
                [(T0 + SCRAPE * s, math.nan if s == 22 else cellar[s % len(cellar)]) for s in steps()]))

    out.append(("up", {"job": "api", "instance": "a"}, [(T0 + SCRAPE * s, 1.0) for s in steps()]))
    out.append(("up", {"job": "api", "instance": "b"},
                [(T0 + SCRAPE * s, 0.0 if 18 <= s <= 26 else 1.0) for s in steps()]))
    out.append(("up", {"job": "web", "instance": "c"}, [(T0 + SCRAPE * s, 1.0) for s in steps(last=30)]))
    out.append(("up", {"job": "web", "instance": "ab"}, [(T0 + SCRAPE * s, 1.0) for s in steps()]))

    # A classic histogram: per scrape, observations spread over the buckets.
    bounds = ["0.1", "0.25", "0.5", "1", "+Inf"]
    per_scrape = [6, 3, 2, 1, 1]  # observations per scrape falling in each bucket (not cumulative)
    for idx, le in enumerate(bounds):
        cumulative = sum(per_scrape[: idx + 1])
        out.append(("http_request_duration_seconds_bucket", {"job": "api", "le": le},
                    [(T0 + SCRAPE * s, float(cumulative * s)) for s in steps()]))
    # A histogram with no observations at all: NaN quantiles.
    for le in ["1", "10", "+Inf"]:
        out.append(("queue_wait_seconds_bucket", {"job": "api", "le": le},
                    [(T0 + SCRAPE * s, 0.0) for s in steps()]))
    return out


def format_value(value):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def write_samples():
    lines = []
    for name, labels, points in series():
        label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for t, value in points:
            lines.append(f"{name}{{{label_text}}} {format_value(value)} {t}")
    lines.append("# EOF")
    with open(SAMPLES, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def query(expr, at):
    return get("/api/v1/query", {"query": expr, "time": str(at)})


def query_range(expr, start, end, step):
    return get("/api/v1/query_range", {"query": expr, "start": str(start), "end": str(end), "step": str(step)})


def get(path, params):
    url = f"http://{ADDRESS}{path}?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as err:
        body = json.load(err)
    if body.get("status") == "success":
        return {"status": "success", "data": body["data"]}
    return {"status": "error", "error": body.get("error", "")}


def main():
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y prometheus")
    write_samples()
    workdir = tempfile.mkdtemp(prefix="mend-query-golden-")
    tsdb = os.path.join(workdir, "tsdb")
    config = os.path.join(workdir, "prometheus.yml")
    with open(config, "w", encoding="utf-8") as f:
        f.write("global:\n  evaluation_interval: 1h\nscrape_configs: []\n")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet", SAMPLES, tsdb], check=True)
    version = subprocess.run(["prometheus", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    server = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
         "--storage.tsdb.retention.time=100y", f"--web.listen-address={ADDRESS}"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "prometheus.log"), "w"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{ADDRESS}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit(f"prometheus did not become ready; see {workdir}/prometheus.log")
            time.sleep(0.2)
        cases = [{"query": expr, "time": at, **query(expr, at)} for expr in QUERIES for at in TIMES]
        range_cases = [
            {"query": expr, "start": start, "end": end, "step": step, **query_range(expr, start, end, step)}
            for expr, start, end, step in RANGE_QUERIES
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    with open(GOLDEN, "w", encoding="utf-8") as f:
        json.dump({"prometheus": version, "cases": cases, "range_cases": range_cases}, f, indent=1)
        f.write("\n")
    shutil.rmtree(workdir)
    n_errors = sum(1 for case in cases if case["status"] != "success")
    print(f"{len(cases)} instant cases ({n_errors} errors) and {len(range_cases)} range cases "
          f"from {version} written to {GOLDEN}")


if __name__ == "__main__":
    main()
