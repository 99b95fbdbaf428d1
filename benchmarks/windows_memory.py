"""Memory of the KPI windows against the number of distinct users: a real `kpi-exporter
serve` process gets the same number of events (over OTLP/HTTP, protobuf) with 10,000 and
with 1,000,000 distinct users, spread over the default windows (5m to 30d) so that every
bucket of every window holds a full sketch at the larger size. Reports the process's resident
memory, the sketches' serialized size, scrape time, and the state file's size, save time and
restore time. Not a test: nothing here asserts a number.

    python benchmarks/windows_memory.py                    # 1,000,000 events per run
    python benchmarks/windows_memory.py --users 10000 100000 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port, parse_samples, wait_http  # noqa: E402

DAY = 86400
# (share of the events, how far back they reach): dense near now, thinner further back, so
# the 10 s buckets of the 5m window and the day buckets of the 30d window all fill up.
SPREAD = ((0.30, 300), (0.20, 3600), (0.20, DAY), (0.15, 7 * DAY), (0.15, 29 * DAY))


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batches(events: int, users: int, batch: int, seed: int = 11):
    """Protobuf ExportLogsServiceRequest bodies: event i belongs to user i % users."""
    rng = random.Random(seed)
    now_ns = time.time_ns()
    ages: list[int] = []
    for share, reach in SPREAD:
        ages += [rng.randrange(reach) for _ in range(int(events * share))]
    ages += [rng.randrange(300) for _ in range(events - len(ages))]
    rng.shuffle(ages)
    for start in range(0, events, batch):
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        kv = rl.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", "bench"
        records = rl.scope_logs.add().log_records
        for i in range(start, min(start + batch, events)):
            rec = records.add()
            rec.time_unix_nano = now_ns - ages[i] * 1_000_000_000
            user = i % users
            rec.event_name = "app.conversion" if i % 25 == 0 else "app.page_view"
            for key, value in (("user.id", f"user-{user}"), ("session.id", f"s-{user}-{i % 3}"),
                               ("url.path", "/home")):
                a = rec.attributes.add()
                a.key, a.value.string_value = key, value
        yield req.SerializeToString()


def start(state_dir: str) -> tuple[subprocess.Popen[bytes], int, int, float, Path]:
    otlp, metrics = free_port(), free_port()
    log = Path(tempfile.mkstemp(prefix="kpi-bench-", suffix=".log")[1])
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--otlp-listen", f"127.0.0.1:{otlp}",
         "--otlp-grpc-listen", "", "--metrics-listen", f"127.0.0.1:{metrics}",
         "--state-dir", state_dir,
         "--log-level", "debug"],
        cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{metrics}/-/ready", timeout=120, proc=proc)
    return proc, otlp, metrics, time.perf_counter() - started, log


def run(users: int, events: int, batch: int) -> dict:
    state_dir = tempfile.mkdtemp(prefix="kpi-bench-windows-")
    proc, otlp, metrics, _, log = start(state_dir)
    idle = rss_mib(proc.pid)
    session = requests.Session()
    sent = 0
    t0 = time.perf_counter()
    for body in batches(events, users, batch):
        r = session.post(f"http://127.0.0.1:{otlp}/v1/logs", data=body,
                         headers={"Content-Type": "application/x-protobuf"}, timeout=120)
        r.raise_for_status()
        sent += 1
    send_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = session.get(f"http://127.0.0.1:{metrics}/metrics", timeout=120).text
    scrape_s = time.perf_counter() - t0
    samples = parse_samples(text)
    rss = rss_mib(proc.pid)
    windows = {w: samples[("app_active_users", frozenset({("window", w)}))]
               for w in ("5m", "1h", "1d", "7d", "30d")}
    sketch_bytes = samples[("kpi_exporter_window_sketch_bytes", frozenset())]
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    saved = re.findall(r"saved the state to \S+: (\d+) bytes in ([\d.]+)s", log.read_text())
    state_bytes, save_s = (int(saved[-1][0]), float(saved[-1][1])) if saved else (0, 0.0)
    # a restart restores what was saved: its start-up time includes reading the snapshot
    proc2, _, metrics2, ready_s, log2 = start(state_dir)
    restored = parse_samples(requests.get(f"http://127.0.0.1:{metrics2}/metrics",
                                          timeout=120).text)
    same = all(restored[("app_active_users", frozenset({("window", w)}))] == v
               for w, v in windows.items())
    restored_rss = rss_mib(proc2.pid)
    proc2.send_signal(signal.SIGTERM)
    proc2.wait(120)
    return {"distinct_users": users, "events": events, "requests": sent,
            "send_seconds": round(send_s, 1), "rss_idle_mib": round(idle, 1),
            "rss_mib": round(rss, 1), "rss_after_restore_mib": round(restored_rss, 1),
            "sketch_bytes": int(sketch_bytes), "scrape_seconds": round(scrape_s, 3),
            "state_file_bytes": state_bytes, "save_seconds": save_s,
            "start_with_restore_seconds": round(ready_s, 2), "restored_equal": same,
            "active_users": windows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events per run (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=2000, help="events per request")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    results = []
    for users in args.users:
        r = run(users, max(args.events, users), args.batch)
        results.append(r)
        print(json.dumps(r), flush=True)
    print()
    print("| distinct users | RSS idle | RSS after ingest | sketches | state file | save | "
          "start + restore | scrape |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['distinct_users']:,} | {r['rss_idle_mib']} MiB | {r['rss_mib']} MiB | "
              f"{r['sketch_bytes'] / 2**20:.1f} MiB | {r['state_file_bytes'] / 2**20:.1f} MiB | "
              f"{r['save_seconds']:.3f} s | {r['start_with_restore_seconds']} s | "
              f"{r['scrape_seconds']} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
