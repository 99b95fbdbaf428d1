"""What exemplars cost the hot path: decode + map + store of 512-event log batches through
the pipeline (no windows), this checkout against the exporter package of an earlier commit
(before exemplars) in the same run, alternating, each in its own process. Batches without a
trace context are what most events are; with one, each record also carries its ids and the
store keeps the newest per series and bucket. Not a test: nothing here asserts a time.

    python benchmarks/exemplars.py [--baseline REV] [--rounds 5] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest,
)

from benchmarks.payloads import make_batches  # noqa: E402

BATCH = 512

# Runs in a child process with PYTHONPATH set to the exporter package to measure.
_LOOP = """
import json, pickle, sys, time
from prometheus_client import CollectorRegistry
from exporter.collectors.selfmetrics import SelfMetrics
from exporter.config import load_config
from exporter.pipeline import Pipeline
from exporter.store import Store
batches = pickle.load(open(sys.argv[1], "rb"))
seconds = float(sys.argv[2])
pipeline = Pipeline(load_config(None, env={}), Store(), SelfMetrics(CollectorRegistry()))
for body in batches:  # warm up: rule cache, series
    pipeline.ingest("log", body, "protobuf")
n, started = 0, time.process_time()
while time.process_time() - started < seconds:
    for body in batches:
        n += pipeline.ingest("log", body, "protobuf").received
print(json.dumps({"events_per_cpu_s": n / (time.process_time() - started)}))
"""


def with_trace_context(batches: list[bytes]) -> list[bytes]:
    """The same batches, every record in a trace (as events logged inside a span are)."""
    rng = random.Random(3)
    out = []
    for body in batches:
        req = ExportLogsServiceRequest.FromString(body)
        for rl in req.resource_logs:
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    lr.trace_id = rng.randbytes(16)
                    lr.span_id = rng.randbytes(8)
        out.append(req.SerializeToString())
    return out


def package_at(rev: str, into: Path) -> Path:
    """The exporter package as it was at ``rev``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "exporter"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(path: Path, batches: str, seconds: float) -> float:
    out = subprocess.run([sys.executable, "-c", _LOOP, batches, str(seconds)],
                         env={**os.environ, "PYTHONPATH": str(path)}, capture_output=True,
                         text=True, check=True)
    return float(json.loads(out.stdout)["events_per_cpu_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline", default="378b559",
                    help="a commit before exemplars (default: the one this work started from)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "exemplars.md"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kpi-bench-exemplars-"))
    base = package_at(a.baseline, tmp / "baseline")
    plain = make_batches(16, BATCH)
    traced = with_trace_context(plain)
    files = {}
    for name, batches in (("no trace context", plain), ("every record traced", traced)):
        files[name] = tmp / f"{len(files)}.pickle"
        files[name].write_bytes(pickle.dumps(batches))
    runs = {(code, name): [] for code in ("baseline", "this checkout") for name in files}
    for r in range(a.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for code, name in order:
            rate = measure(base if code == "baseline" else ROOT, str(files[name]), a.seconds)
            runs[code, name].append(rate)
            print(f"round {r} {code:14} {name:20} {rate:10,.0f} events per CPU second",
                  flush=True)
    lines = [f"# Exemplars on the hot path ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores,"
             f" Python {sys.version.split()[0]}, baseline {a.baseline}, {a.rounds} rounds)", "",
             "| batches | baseline events per CPU s | this checkout | ratio |", "|---|---|---|---|"]
    for name in files:
        b = statistics.median(runs["baseline", name])
        c = statistics.median(runs["this checkout", name])
        lines.append(f"| {name} | {b:,.0f} | {c:,.0f} | {c / b:.3f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
