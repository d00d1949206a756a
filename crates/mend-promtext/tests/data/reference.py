#!/usr/bin/env python3
"""Regenerates the golden files <fixture>.reference.json: what the reference parser, the Prometheus Python client
(pip install prometheus-client), reads from each exposition fixture in this directory. `*.prom` files go through
its 0.0.4 parser, `*.om` files through its OpenMetrics parser. tests/reference.rs parses the same fixtures and
compares family by family, sample by sample; it needs no Python.

The JSON says, per family: name, type (OpenMetrics names: 0.0.4's "untyped" is "unknown"), help, unit and samples;
per sample: name, labels as [name, value] pairs in input order, value as Python's repr (exact, and NaN/inf survive
JSON), timestamp in integer milliseconds or null (OpenMetrics seconds truncated toward zero), exemplar or null.

The Python 0.0.4 parser renames counters to the OpenMetrics convention (family "x" with samples "x_total"); this
script undoes that so that names are compared as written in the exposition.

Run from this directory: python3 reference.py
"""

import glob
import json
import math
import re

from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.samples import Timestamp


def timestamp_ms(timestamp, openmetrics):
    if timestamp is None:
        return None
    if isinstance(timestamp, Timestamp):
        return timestamp.sec * 1000 + timestamp.nsec // 1_000_000
    if openmetrics:
        return math.trunc(timestamp * 1000)
    # The 0.0.4 parser divides integer milliseconds by 1000.
    return round(timestamp * 1000)


def labels(label_dict):
    return [[name, value] for name, value in label_dict.items()]


def sample_json(sample, name, openmetrics):
    exemplar = None
    if sample.exemplar is not None:
        exemplar = {
            "labels": labels(sample.exemplar.labels),
            "value": repr(float(sample.exemplar.value)),
            "timestamp_ms": timestamp_ms(sample.exemplar.timestamp, openmetrics),
        }
    return {
        "name": name,
        "labels": labels(sample.labels),
        "value": repr(float(sample.value)),
        "timestamp_ms": timestamp_ms(sample.timestamp, openmetrics),
        "exemplar": exemplar,
    }


def reference(path):
    with open(path, encoding="utf-8") as source:
        text = source.read()
    openmetrics = path.endswith(".om")
    declared_counters = set(re.findall(r"^#\s*TYPE\s+(\S+)\s+counter\s*$", text, re.MULTILINE))
    families = []
    for family in (parse_openmetrics if openmetrics else parse_text)(text):
        name = family.name
        renamed = False
        if not openmetrics and family.type == "counter":
            if name + "_total" in declared_counters:
                name += "_total"
            else:
                renamed = True
        samples = []
        for sample in family.samples:
            sample_name = sample.name[: -len("_total")] if renamed else sample.name
            samples.append(sample_json(sample, sample_name, openmetrics))
        families.append({
            "name": name,
            "type": "unknown" if family.type == "untyped" else family.type,
            "help": family.documentation,
            "unit": family.unit,
            "samples": samples,
        })
    return {"format": "openmetrics" if openmetrics else "text", "families": families}


def dumps(document):
    """JSON with one line per family header and per sample, so that diffs of the golden files stay readable."""
    compact = lambda value: json.dumps(value, ensure_ascii=False)
    lines = ['{"format": %s, "families": [' % compact(document["format"])]
    for family_idx, family in enumerate(document["families"]):
        header = {key: value for key, value in family.items() if key != "samples"}
        lines.append(" " + compact(header)[:-1] + ', "samples": [')
        samples = family["samples"]
        for sample_idx, sample in enumerate(samples):
            lines.append("  " + compact(sample) + ("," if sample_idx + 1 < len(samples) else ""))
        lines.append(" ]}" + ("," if family_idx + 1 < len(document["families"]) else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def main():
    for path in sorted(glob.glob("*.prom") + glob.glob("*.om")):
        with open(path + ".reference.json", "w", encoding="utf-8") as out:
            out.write(dumps(reference(path)))
        print(path + ".reference.json")


if __name__ == "__main__":
    main()
