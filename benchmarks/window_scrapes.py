"""Scrapes against ingest: a real `kpi-exporter serve` process holds 200,000 events spread over
30 days in its KPI windows (the default windows, then the same with a breakdown by a
20-value attribute). Reports the /metrics scrape time, and the latency of small export
requests (events stamped now) sent one after another, without scrapes and while another
process scrapes back to back. The two alternate in one-second slices, so that the load of
a shared machine falls on both alike. Not a test: nothing here asserts a number.

    python benchmarks/window_scrapes.py
    python benchmarks/window_scrapes.py --tree /path/to/another/checkout   # its exporter code
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port, wait_http  # noqa: E402

DAY = 86400
PLANS = [f"plan-{i}" for i in range(20)]
# (share of the events, how far back they reach): dense near now, thinner further back, so
# the buckets of every window, the 5m window's 10 s ones to the 30d window's days, hold data.
SPREAD = ((0.30, 300), (0.20, 3600), (0.20, DAY), (0.15, 7 * DAY), (0.15, 29 * DAY))
BREAKDOWN = ("windows:\n  breakdowns:\n    - {attribute: app.plan, label: plan, "
             "max_values: 21}\n")
SCENARIOS = {"default windows": "", "20-value breakdown": BREAKDOWN}


def history(events: int, users: int, batch: int, seed: int = 7) -> list[bytes]:
    """Protobuf bodies of ``events`` page views over the last 30 days."""
    rng = random.Random(seed)
    now_ns = time.time_ns()
    ages: list[int] = []
    for share, reach in SPREAD:
        ages += [rng.randrange(reach) for _ in range(int(events * share))]
    ages += [rng.randrange(300) for _ in range(events - len(ages))]
    rng.shuffle(ages)
    return [_body(range(start, min(start + batch, events)), users,
                  lambda i: now_ns - ages[i] * 1_000_000_000)
            for start in range(0, events, batch)]


def live(n: int, users: int, offset: int) -> bytes:
    """One protobuf body of ``n`` page views stamped now."""
    now_ns = time.time_ns()
    return _body(range(offset, offset + n), users, lambda i: now_ns)


def _body(indexes: range, users: int, stamp) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bench"
    records = rl.scope_logs.add().log_records
    for i in indexes:
        rec = records.add()
        rec.time_unix_nano = stamp(i)
        user = (i * 7919) % users
        rec.event_name = "app.conversion" if i % 25 == 0 else "app.page_view"
        for key, value in (("user.id", f"user-{user}"), ("session.id", f"s-{user}-{i % 3}"),
                           ("url.path", "/home"), ("app.plan", PLANS[user % len(PLANS)])):
            a = rec.attributes.add()
            a.key, a.value.string_value = key, value
    return req.SerializeToString()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Exporter:
    def __init__(self, tree: Path, config_text: str):
        self.dir = tempfile.mkdtemp(prefix="kpi-bench-scrapes-")
        config = Path(self.dir) / "config.yaml"
        config.write_text(config_text + "state: {enabled: false}\n")
        self.otlp, self.metrics = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--config", str(config),
             "--otlp-listen", f"127.0.0.1:{self.otlp}", "--otlp-grpc-listen", "",
             "--metrics-listen", f"127.0.0.1:{self.metrics}", "--log-level", "warning"],
            cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.metrics}/-/ready", timeout=120, proc=self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def scrape_times(port: int, n: int) -> tuple[list[float], int]:
    times, size = [], 0
    with requests.Session() as s:
        for _ in range(n):
            t = time.perf_counter()
            r = s.get(f"http://127.0.0.1:{port}/metrics", timeout=120)
            times.append((time.perf_counter() - t) * 1000)
            size = len(r.content)
    return times, size


class Sender:
    """Sends export requests of ``events`` events stamped now, one after another."""

    def __init__(self, port: int, events: int, users: int):
        self.port, self.events, self.users = port, events, users
        self.offset = 0
        self.session = requests.Session()

    def latencies(self, seconds: float) -> list[float]:
        out: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            body = live(self.events, self.users, self.offset)
            self.offset += self.events
            t = time.perf_counter()
            r = self.session.post(f"http://127.0.0.1:{self.port}/v1/logs", data=body,
                                  headers={"Content-Type": "application/x-protobuf"},
                                  timeout=120)
            out.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
        return out


def run(tree: Path, name: str, config_text: str, args: argparse.Namespace) -> dict:
    e = Exporter(tree, config_text)
    try:
        with requests.Session() as s:
            for body in history(args.events, args.users, args.batch):
                s.post(f"http://127.0.0.1:{e.otlp}/v1/logs", data=body,
                       headers={"Content-Type": "application/x-protobuf"},
                       timeout=120).raise_for_status()
        scrape_times(e.metrics, 2)  # warm up
        scrapes, size = scrape_times(e.metrics, args.scrapes)
        # the scraper is a process of its own, so its work does not slow this one's sending
        scraper = subprocess.Popen(
            [sys.executable, __file__, "--scrape-loop", str(e.metrics)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert scraper.stdin is not None and scraper.stdout is not None
        sender = Sender(e.otlp, args.request_events, args.users)
        quiet: list[float] = []
        busy: list[float] = []
        try:
            for _ in range(int(args.seconds)):
                quiet += sender.latencies(1.0)
                scraper.stdin.write("go\n")
                busy += sender.latencies(1.0)
                scraper.stdin.write("pause\n")
                scraper.stdout.readline()  # its scrape in flight has finished
        finally:
            busy_scrapes = json.loads(scraper.communicate("stop\n", timeout=300)[0])
    finally:
        e.stop()
    return {
        "tree": str(tree), "scenario": name, "events": args.events,
        "scrape_ms_median": round(statistics.median(scrapes), 1),
        "scrape_ms_max": round(max(scrapes), 1), "scrape_bytes": size,
        "ingest_ms_p50": round(percentile(quiet, 0.5), 2),
        "ingest_ms_p99": round(percentile(quiet, 0.99), 2),
        "ingest_ms_p50_scraping": round(percentile(busy, 0.5), 2),
        "ingest_ms_p99_scraping": round(percentile(busy, 0.99), 2),
        "requests": len(quiet), "requests_scraping": len(busy),
        "scrapes_during_ingest": len(busy_scrapes),
        "scrape_ms_median_during_ingest": round(statistics.median(busy_scrapes), 1)
        if busy_scrapes else None,
    }


def scrape_loop(port: int) -> None:
    """Scrapes back to back between "go" and "pause" on standard input (answering "paused"
    once its scrape in flight is done) until "stop"; then prints the times."""
    go, stop = threading.Event(), threading.Event()
    paused = threading.Semaphore(0)

    def commands() -> None:
        for line in sys.stdin:
            if line.strip() == "go":
                go.set()
            elif line.strip() == "pause":
                go.clear()
                paused.release()
            else:
                break
        stop.set()
        go.set()

    threading.Thread(target=commands, daemon=True).start()
    times: list[float] = []
    with requests.Session() as s:
        while not stop.is_set():
            if not go.is_set():
                if paused.acquire(blocking=False):
                    print("paused", flush=True)
                go.wait(0.05)
                continue
            t = time.perf_counter()
            s.get(f"http://127.0.0.1:{port}/metrics", timeout=120)
            times.append((time.perf_counter() - t) * 1000)
    print(json.dumps(times), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--scrape-loop"]:
        scrape_loop(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout whose exporter to run (repeat to compare; default: "
                             "this one)")
    parser.add_argument("--events", type=int, default=200_000, help="history (default 200,000)")
    parser.add_argument("--users", type=int, default=20_000, help="distinct users")
    parser.add_argument("--batch", type=int, default=2000, help="history events per request")
    parser.add_argument("--scrapes", type=int, default=20, help="timed scrapes (default 20)")
    parser.add_argument("--seconds", type=int, default=15,
                        help="seconds of ingest with scrapes, and as many without (default 15)")
    parser.add_argument("--request-events", type=int, default=100,
                        help="events per timed export request (default 100)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    results = []
    for tree in args.tree or [ROOT]:
        for name, config_text in SCENARIOS.items():
            r = run(tree.resolve(), name, config_text, args)
            results.append(r)
            print(json.dumps(r), flush=True)
    print()
    print("| tree | scenario | scrape median / max | ingest p50 / p99 | ingest p50 / p99 while "
          "scraping | scrape while ingesting |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['tree']} | {r['scenario']} | {r['scrape_ms_median']} / {r['scrape_ms_max']} ms"
              f" | {r['ingest_ms_p50']} / {r['ingest_ms_p99']} ms | {r['ingest_ms_p50_scraping']}"
              f" / {r['ingest_ms_p99_scraping']} ms | {r['scrape_ms_median_during_ingest']} ms |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
