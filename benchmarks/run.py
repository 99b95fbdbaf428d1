"""kpi-exporter benchmarks: ingest throughput over HTTP against its floor and a naive
receiver, scrape time, and memory under a label-cardinality flood. All in one run, on this
machine, so the numbers compare. Not a test: nothing here asserts a time.

    make bench                      # or: python benchmarks/run.py --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.payloads import make_batches  # noqa: E402
from exporter import otlp_protobuf  # noqa: E402
from tests.helpers import free_port, wait_http  # noqa: E402

BATCH = 512


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def floor(batches: list[bytes], seconds: float) -> float:
    """Events/s of protobuf decoding plus attribute extraction alone, in this process."""
    n = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for body in batches:
            n += len(otlp_protobuf.decode_logs(body).records)
    return n / (time.perf_counter() - started)


def send(port: int, batches_file: str, seconds: float, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sender.py"), "127.0.0.1", str(port),
         str(seconds), str(threads), batches_file, str(BATCH)],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def start_exporter(config_text: str | None = None) -> tuple[subprocess.Popen, int, int]:
    otlp, metrics = free_port(), free_port()
    state = tempfile.mkdtemp(prefix="kpi-bench-state-")
    args = []
    if config_text is not None:
        config = Path(state) / "config.yaml"
        config.write_text(config_text)
        args = ["--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KPI_EXPORTER_STATE_DIR": state}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--otlp-listen", f"127.0.0.1:{otlp}",
         "--otlp-grpc-listen", "", "--metrics-listen", f"127.0.0.1:{metrics}",
         "--log-level", "warning", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{metrics}/-/ready", proc=proc)
    return proc, otlp, metrics


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def scrape_ms(port: int, n: int = 20) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        times.append((time.perf_counter() - t) * 1000)
        size = len(r.content)
    return statistics.median(times), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="load duration per run (default 8)")
    ap.add_argument("--threads", type=int, default=2, help="sender connections (default 2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latest.md"))
    args = ap.parse_args()

    batches = make_batches(64, BATCH)
    tmp = tempfile.NamedTemporaryFile(suffix=".pickle", delete=False)
    pickle.dump(batches, tmp)
    tmp.close()
    results: dict[str, float] = {}

    results["floor_events_per_s"] = floor(batches, min(args.seconds, 5.0))

    proc, otlp, metrics = start_exporter()
    results["exporter_rss_idle_mib"] = rss_mib(proc.pid)
    load = send(otlp, tmp.name, args.seconds, args.threads)
    results["exporter_events_per_s"] = load["events"] / load["seconds"]
    results["exporter_errors"] = load["errors"]
    results["exporter_rss_after_load_mib"] = rss_mib(proc.pid)
    results["scrape_ms"], results["scrape_bytes"] = scrape_ms(metrics)
    stop(proc)

    # The same traffic with the KPI windows off: what salted hashing and the sketches cost.
    proc, otlp, metrics = start_exporter("windows: {enabled: false}\n")
    load = send(otlp, tmp.name, args.seconds, args.threads)
    results["no_windows_events_per_s"] = load["events"] / load["seconds"]
    stop(proc)

    naive_port = free_port()
    naive = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "naive_receiver.py"),
                              str(naive_port)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_http(f"http://127.0.0.1:{naive_port}/metrics", proc=naive)
    load = send(naive_port, tmp.name, args.seconds, args.threads)
    results["naive_events_per_s"] = load["events"] / load["seconds"]
    stop(naive)

    # Cardinality flood: 100,000 distinct values of a labelled attribute (url.path).
    flood = make_batches(200, BATCH, seed=11, distinct_routes=100_000)
    proc, otlp, metrics = start_exporter()
    before = rss_mib(proc.pid)
    with requests.Session() as s:
        for body in flood:
            s.post(f"http://127.0.0.1:{otlp}/v1/logs", data=body,
                   headers={"Content-Type": "application/x-protobuf"}, timeout=30)
    after = rss_mib(proc.pid)
    text = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=30).text
    series = [line for line in text.splitlines() if line.startswith("app_page_views_total{")]
    results["flood_rss_before_mib"], results["flood_rss_after_mib"] = before, after
    results["flood_page_view_series"] = len(series)
    results["flood_scrape_ms"], results["flood_scrape_bytes"] = scrape_ms(metrics)
    stop(proc)
    os.unlink(tmp.name)

    ratio = results["exporter_events_per_s"] / results["floor_events_per_s"]
    lines = [
        f"# Benchmark results ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]})",
        "",
        "| measure | value |",
        "|---|---|",
        f"| floor: protobuf decode + attribute extraction (1 thread) | "
        f"{results['floor_events_per_s']:,.0f} events/s |",
        f"| kpi-exporter end to end over HTTP ({BATCH}-event batches, {args.threads} keep-alive "
        f"connections) | {results['exporter_events_per_s']:,.0f} events/s |",
        f"| end to end / floor | {ratio:.2f} |",
        f"| the same with the KPI windows off (mapping only) | "
        f"{results['no_windows_events_per_s']:,.0f} events/s, "
        f"{results['no_windows_events_per_s'] / results['floor_events_per_s']:.2f} of the floor |",
        f"| naive Flask + MessageToDict + labels().inc() | "
        f"{results['naive_events_per_s']:,.0f} events/s |",
        f"| kpi-exporter / naive | "
        f"{results['exporter_events_per_s'] / results['naive_events_per_s']:.1f}x |",
        f"| scrape /metrics after the run (median of 20) | {results['scrape_ms']:.1f} ms, "
        f"{results['scrape_bytes']:,} bytes |",
        f"| resident memory idle / after the run | {results['exporter_rss_idle_mib']:.0f} MiB / "
        f"{results['exporter_rss_after_load_mib']:.0f} MiB |",
        f"| 100,000 distinct url.path values: page-view series | "
        f"{results['flood_page_view_series']:,} (cap 2000, overflow included) |",
        f"| 100,000 distinct url.path values: memory before / after | "
        f"{results['flood_rss_before_mib']:.0f} MiB / {results['flood_rss_after_mib']:.0f} MiB |",
        f"| scrape at the series cap (median of 20) | {results['flood_scrape_ms']:.1f} ms, "
        f"{results['flood_scrape_bytes']:,} bytes |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).write_text(report)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
