#!/usr/bin/env python3
"""Writes python_client.om and python_client.prom: one registry exposed by the Prometheus Python client
(pip install prometheus-client) in OpenMetrics and in 0.0.4, covering what the Go and Rust exporters in the other
fixtures do not write: exemplars, units, info, stateset (Enum), gaugehistogram, summary quantiles, _created
samples, timestamps, escapes in label values and HELP, NaN and infinities.

Run from this directory: python3 python_client_fixture.py
"""

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client import platform_collector, process_collector


class Custom:
    """Families the instrumentation API cannot make: gauge histograms, quantiles, timestamps, odd values."""

    def collect(self):
        queue = GaugeHistogramMetricFamily("queue_wait_seconds", "Jobs waiting, by wait so far.", unit="seconds")
        queue.add_metric([], [("0.1", 4.0), ("1.0", 9.0), ("+Inf", 11.0)], gsum_value=5.25)
        yield queue
        rpc = Metric("rpc_latency_seconds", "RPC latency.", "summary")
        for method, count in (("get", 12), ("put", 0)):
            for quantile, value in (("0.5", 0.2), ("0.99", 1.25)):
                rpc.add_sample("rpc_latency_seconds", {"method": method, "quantile": quantile}, value if count else float("nan"))
            rpc.add_sample("rpc_latency_seconds_count", {"method": method}, count)
            rpc.add_sample("rpc_latency_seconds_sum", {"method": method}, 3.5 if count else 0)
        yield rpc
        temps = GaugeMetricFamily(
            "sensor_celsius", 'Temperatures; the "raw" ones\nmay be NaN or \\infinite\\.', labels=["sensor"]
        )
        temps.add_metric(["cpu"], 42.5, timestamp=1700000000.123)
        temps.add_metric(["gpu \"main\"\\0\nfan"], float("nan"))
        temps.add_metric(["hot"], float("inf"))
        temps.add_metric(["cold"], float("-inf"))
        temps.add_metric(["tiny"], 1.5e-12)
        temps.add_metric(["huge"], -2.5e+300)
        yield temps


def main():
    registry = CollectorRegistry()
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    requests = Counter("http_requests", "HTTP requests.", ["method", "code"], registry=registry)
    requests.labels("GET", "200").inc(1027)
    requests.labels("POST", "500").inc(3)
    requests.labels("GET", "200").inc(exemplar={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
    latency = Histogram(
        "http_request_duration_seconds", "Latency.", ["route"], unit="seconds", registry=registry,
        buckets=(0.005, 0.05, 0.5, 5.0),
    )
    for value in (0.001, 0.02, 0.02, 0.3, 7.0):
        latency.labels("/").observe(value)
    latency.labels("/slow").observe(2.0, exemplar={"trace_id": "abc", "span_id": "1"})
    Summary("job_seconds", "Job durations.", registry=registry).observe(12.5)
    Gauge("in_flight", "In-flight requests.", registry=registry).set(-3)
    Info("build", "Build information.", registry=registry).info({"version": "1.2.3", "commit": "ab12"})
    Enum("task_state", "Task state.", states=["starting", "running", "stopped"], registry=registry).state("running")
    registry.register(Custom())
    with open("python_client.om", "wb") as out:
        out.write(generate_openmetrics(registry))
    with open("python_client.prom", "wb") as out:
        out.write(generate_latest(registry))


if __name__ == "__main__":
    main()
