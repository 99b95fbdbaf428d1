"""Scale-out benchmarks, all in one run on this machine so the numbers compare:

- one exporter with the KPI windows in memory, then the same traffic with the windows in a
  Redis started here (its own port and directory): events/s of each and their ratio, CPU
  seconds per million events of the exporter and of Redis (INFO cpu). Twice: with the usual
  traffic (64 batches replayed, so each identity comes back about ten times within a bucket,
  as product traffic does), and with identities that never repeat (every event a new user
  and session: the Redis store's worst case, as it can leave out nothing it sent before);
- two exporters sharing one OTLP port with --reuse-port against one: events/s and CPU
  seconds per million events (two cores are shared with the sender and Redis, so CPU per
  event is the figure that carries over to bigger machines);
- the Redis CPU of reading every window's estimates (what each replica does when scraped),
  with the totals only and with a breakdown of 20 and of 200 values over every window,
  every key dense (the worst case): PFCOUNT over every bucket key, as reads were before
  merged keys, against the store's reads through merged keys.

With ``--before REV`` the Redis-store rows also run the exporter of git revision REV (its
tree exported to a temporary directory) on the same traffic in the same run: the send path
before and after a change, each against the one memory-store baseline.

Not a test: nothing here asserts a time.

    python benchmarks/scale_out.py --seconds 8 [--before REV]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.payloads import make_batches  # noqa: E402
from benchmarks.run import BATCH, send  # noqa: E402
from exporter.privacy import IdentityHasher  # noqa: E402
from exporter.windows import OVERFLOW_VALUE, BreakdownSpec, WindowsConfig  # noqa: E402
from exporter.windows.config import DEFAULT_DURATIONS  # noqa: E402
from exporter.windows.redis import KINDS, RedisWindowStore  # noqa: E402
from tests.helpers import Scrape, free_port, wait_http  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SALT = "benchmark-salt-0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")
READ_VALUES = (0, 20, 200)  # breakdown values in the read runs (0: the totals only)
READ_MINUTE = 60  # reads in the run of one read a second


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Exporter:
    def __init__(self, store: str, otlp: int | None = None, reuse_port: bool = False,
                 root: Path = ROOT):
        self.otlp = otlp or free_port()
        self.metrics = free_port()
        self.dir = tempfile.mkdtemp(prefix="kpi-bench-scale-")
        config = Path(self.dir) / "config.yaml"
        # web analytics off: the visits share the store and have their own benchmark
        # (benchmarks/visits.py); here the KPI windows alone
        config.write_text(f"windows: {{store: '{store}'}}\nprivacy: {{salt: {SALT}}}\n"
                          f"state: {{dir: {self.dir}/state}}\n"
                          f"web_analytics: {{enabled: false}}\n")
        cmd = [sys.executable, "-m", "exporter", "serve", "--config", str(config),
               "--otlp-listen", f"127.0.0.1:{self.otlp}", "--otlp-grpc-listen", "",
               "--metrics-listen", f"127.0.0.1:{self.metrics}", "--log-level", "warning"]
        if reuse_port:
            cmd.append("--reuse-port")
        # run from ``root``: its exporter package comes first on the path
        self.proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(root)},
                                     cwd=root, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.metrics}/-/ready", proc=self.proc)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def scrape(self) -> Scrape:
        return Scrape(requests.get(f"http://127.0.0.1:{self.metrics}/metrics", timeout=30).text)

    def drained(self, timeout: float = 60) -> None:
        """Waits until the window store has been sent everything it buffered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.scrape().value("kpi_exporter_window_store_buffered_events"):
                time.sleep(1.5)  # one more send interval: the last batch is in flight
                return
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def per_million(seconds: float, events: float) -> float:
    return seconds / events * 1e6 if events else float("nan")


def pickled(batches: list[bytes]) -> str:
    tmp = tempfile.NamedTemporaryFile(suffix=".pickle", delete=False)
    pickle.dump(batches, tmp)
    tmp.close()
    return tmp.name


class Clock:
    """Wall-clock seconds the read runs move on by hand."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def read_cost(redis: RedisServer, values: int) -> dict[str, float]:
    """Redis CPU seconds (and wall seconds) of one read of every window's estimates, every
    bucket key of the default windows dense (12 KiB each): PFCOUNT over every bucket, the
    store's first read (it builds the merged keys), its reads after that, and its mean read
    over a minute of one read a second while buckets turn and events arrive a minute late."""
    client = redis.client()
    client.flushall()
    breakdowns = (BreakdownSpec("app.platform", "platform", max_values=values + 1,
                                windows=DEFAULT_DURATIONS),) if values else ()
    config = WindowsConfig(store=redis.url, breakdowns=breakdowns)
    clock = Clock(float(int(time.time())))
    store = RedisWindowStore(config, IdentityHasher(SALT).fingerprint, clock=clock)
    store.open()
    names = [f"value-{i}" for i in range(values)]
    store.add([(0, i, i, False, (name,)) for i, name in enumerate(names, 1)]
              or [(0, 1, 1, False, ())])
    assert store.flush()
    tags = [store.keys.group_tag(None)]
    if values:
        tags += [store.keys.group_tag("platform", v) for v in (*names, OVERFLOW_VALUE)]

    def buckets(now: float) -> list[tuple[int, str, str, list[int]]]:
        out = []
        for w in config.windows:
            last = int(now) // w.bucket_seconds
            for tag in tags:
                for kind in KINDS:
                    out.append((w.bucket_seconds, kind, tag,
                                list(range(last - w.buckets + 1, last + 1))))
        return out

    dense = store.keys.prefix + "dense"
    client.pfadd(dense, *[os.urandom(8) for _ in range(20_000)])
    pipe = client.pipeline(transaction=False)
    for width, kind, tag, bs in buckets(clock.t):
        for b in bs:
            pipe.copy(dense, store.keys.data(width, kind, tag, b), replace=True)
        if len(pipe) >= 10_000:
            pipe.execute()
    pipe.execute()
    r = {"keys": float(sum(len(bs) for *_, bs in buckets(clock.t))),
         "used_memory_mib": client.info("memory")["used_memory"] / 2**20}

    def every_bucket() -> None:
        pipe = client.pipeline(transaction=False)
        for width, kind, tag, bs in buckets(clock.t):
            pipe.pfcount(*[store.keys.data(width, kind, tag, b) for b in bs])
        pipe.execute()

    def cost(read: Callable[[], Any]) -> tuple[float, float]:
        cpu, wall = redis.cpu_seconds(), time.perf_counter()
        read()
        return redis.cpu_seconds() - cpu, time.perf_counter() - wall

    def median(read: Callable[[], Any], key: str) -> None:
        runs = [cost(read) for _ in range(3)]
        r[f"{key}_cpu_s"] = statistics.median(c for c, _ in runs)
        r[f"{key}_wall_s"] = statistics.median(w for _, w in runs)

    median(every_bucket, "every")
    assert store.refresh()  # the key sizes, measured once a minute, then not again here
    # the read after every window's buckets turned: it merges each window's older buckets
    client.delete(*client.scan_iter(match=store.keys.prefix + "*-*", count=10_000))
    r["first_cpu_s"], r["first_wall_s"] = cost(store.refresh)
    median(store.refresh, "merged")
    spent = 0.0
    for n in range(READ_MINUTE):
        clock.t += 1
        now = int(clock.t)
        store.add([(t, hash((t, i)), hash((t, i, 0)), False, (name,))
                   for i, name in enumerate(names or [""]) for t in (now, now - 60)])
        assert store.flush()
        spent += cost(store.refresh)[0]
    r["minute_cpu_s"] = spent / READ_MINUTE
    store.close()
    client.flushall()
    return r


def export_tree(rev: str) -> Path:
    """The tree of git revision ``rev`` in a new temporary directory."""
    out = Path(tempfile.mkdtemp(prefix="kpi-bench-before-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run(args: argparse.Namespace) -> dict[str, float]:
    before = export_tree(args.before) if args.before else None
    path = pickled(make_batches(64, BATCH))
    # enough batches for 60,000 events/s without sending one twice, from a billion users
    fresh_count = int(args.seconds * 60_000 / BATCH) + 1
    fresh_path = pickled(make_batches(fresh_count, BATCH, seed=13, users=10**9))
    r: dict[str, float] = {"fresh_events": float(fresh_count * BATCH)}
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="kpi-bench-redis-")))
    try:
        # -- memory store vs Redis store, one process, the same traffic -------------------
        stores = [("memory", "memory", ROOT), ("redis", redis.url, ROOT)]
        if before:
            stores.append(("before_redis", redis.url, before))
        for traffic, batches in (("", path), ("fresh_", fresh_path)):
            for name, store, root in stores:
                key = traffic + name
                if name != "memory":
                    redis.client().flushall()  # each Redis-store run starts empty
                e = Exporter(store, root=root)
                redis_cpu = redis.cpu_seconds()
                cpu = e.cpu()
                load = send(e.otlp, batches, args.seconds, args.threads)
                if name != "memory":
                    e.drained()
                r[f"{key}_events_per_s"] = load["events"] / load["seconds"]
                r[f"{key}_exporter_cpu_s_per_m"] = per_million(e.cpu() - cpu, load["events"])
                if traffic:
                    r[f"{key}_events"] = load["events"]
                if name != "memory":
                    r[f"{key}_cpu_s_per_m"] = per_million(redis.cpu_seconds() - redis_cpu,
                                                          load["events"])
                    s = e.scrape()
                    r[f"{key}_dropped"] = s.value("kpi_exporter_window_records_dropped_total",
                                                  reason="store_unavailable") or 0
                if key == "redis":
                    r["redis_keys"] = float(redis.client().dbsize())
                    r["redis_used_memory_mib"] = (redis.client().info("memory")["used_memory"]
                                                  / 2**20)
                e.stop()
            # by CPU per event: what the throughput of a process with a core of its own
            # would be, where the sender, Redis and the exporter share two cores
            for name in [n for n, *_ in stores[1:]]:
                r[f"{traffic}{name}_over_memory"] = (r[f"{traffic}{name}_events_per_s"]
                                                     / r[f"{traffic}memory_events_per_s"])
                r[f"{traffic}{name}_over_memory_cpu"] = (
                    r[f"{traffic}memory_exporter_cpu_s_per_m"]
                    / r[f"{traffic}{name}_exporter_cpu_s_per_m"])

        # -- two processes with --reuse-port vs one, Redis store --------------------------
        for n in (1, 2):
            port = free_port()
            procs = [Exporter(redis.url, otlp=port, reuse_port=True) for _ in range(n)]
            cpu = sum(p.cpu() for p in procs)
            redis_cpu = redis.cpu_seconds()
            load = send(port, path, args.seconds, 2 * args.threads)
            for p in procs:
                p.drained()
            r[f"reuse{n}_events_per_s"] = load["events"] / load["seconds"]
            r[f"reuse{n}_exporter_cpu_s_per_m"] = per_million(
                sum(p.cpu() for p in procs) - cpu, load["events"])
            r[f"reuse{n}_redis_cpu_s_per_m"] = per_million(redis.cpu_seconds() - redis_cpu,
                                                           load["events"])
            r[f"reuse{n}_shares"] = float(min(
                p.scrape().value("kpi_exporter_records_received_total", signal="log") or 0
                for p in procs))
            for p in procs:
                p.stop()

        # -- reads: every bucket against merged keys --------------------------------------
        for values in READ_VALUES:
            for key, value in read_cost(redis, values).items():
                r[f"read{values}_{key}"] = value
    finally:
        redis.stop()
        os.unlink(path)
        os.unlink(fresh_path)
        if before:
            shutil.rmtree(before)
    return r


def report(r: dict[str, float], args: argparse.Namespace) -> str:
    lines = [
        f"# Scale-out benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, Redis started by the benchmark, no persistence)",
        "",
        f"Same traffic in every row but those marked: {BATCH}-event OTLP/protobuf batches, "
        f"64 of them replayed (32,768 events from 50,000 users with 5 sessions each, so "
        f"each identity comes back about ten times in a run), event times now; "
        f"{args.seconds:g} s per run; web analytics off (the visits, which share the "
        f"store, have their own benchmark). Rows marked 'identities that never repeat': every "
        f"event from a new user and session. Ratios by CPU per event are the memory store's "
        f"exporter CPU per event over the Redis store's: the ratio of throughputs of "
        f"processes with a core each (here the sender, Redis and the exporter share two "
        f"cores, so throughput alone moves with the machine's load).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| one process, windows in memory ({args.threads} connections) | "
        f"{r['memory_events_per_s']:,.0f} events/s, "
        f"{r['memory_exporter_cpu_s_per_m']:.1f} CPU s per million events |",
        f"| one process, windows in Redis | {r['redis_events_per_s']:,.0f} events/s, "
        f"{r['redis_exporter_cpu_s_per_m']:.1f} CPU s per million events |",
        f"| Redis store / memory store: throughput (by CPU per event) | "
        f"{r['redis_over_memory']:.2f} ({r['redis_over_memory_cpu']:.2f}) |",
        f"| Redis CPU per million events | {r['redis_cpu_s_per_m']:.2f} s |",
        f"| Redis after the run | {r['redis_keys']:,.0f} keys, "
        f"{r['redis_used_memory_mib']:.1f} MiB used; {r['redis_dropped']:,.0f} events dropped |",
        f"| identities that never repeat ({r['fresh_events']:,.0f} distinct events, "
        f"{max(r['fresh_memory_events'], r['fresh_redis_events']):,.0f} sent at most): "
        f"memory / Redis store | {r['fresh_memory_events_per_s']:,.0f} / "
        f"{r['fresh_redis_events_per_s']:,.0f} events/s, "
        f"{r['fresh_memory_exporter_cpu_s_per_m']:.1f} / "
        f"{r['fresh_redis_exporter_cpu_s_per_m']:.1f} CPU s per million events |",
        f"| identities that never repeat: Redis store / memory store: throughput (by CPU per "
        f"event) | {r['fresh_redis_over_memory']:.2f} "
        f"({r['fresh_redis_over_memory_cpu']:.2f}) |",
        f"| identities that never repeat: Redis CPU per million events | "
        f"{r['fresh_redis_cpu_s_per_m']:.2f} s; {r['fresh_redis_dropped']:,.0f} events "
        f"dropped |",
        f"| one process, --reuse-port ({2 * args.threads} connections) | "
        f"{r['reuse1_events_per_s']:,.0f} events/s, "
        f"{r['reuse1_exporter_cpu_s_per_m']:.1f} exporter CPU s per million events |",
        f"| two processes, --reuse-port, one OTLP port | {r['reuse2_events_per_s']:,.0f} "
        f"events/s, {r['reuse2_exporter_cpu_s_per_m']:.1f} exporter CPU s per million events "
        f"(the smaller share: {r['reuse2_shares']:,.0f} events) |",
        f"| Redis CPU per million events, one / two processes | "
        f"{r['reuse1_redis_cpu_s_per_m']:.2f} s / {r['reuse2_redis_cpu_s_per_m']:.2f} s |",
    ]
    if args.before:
        lines += [
            "",
            f"Before and after in this run: the Redis-store rows above again with the exporter "
            f"of commit {args.before_name}, against the same memory-store baseline (exporter CPU s "
            f"per million events; throughput ratio and, in brackets, the ratio by CPU per "
            f"event).",
            "",
            "| traffic | before: exporter CPU | before: Redis / memory | before: Redis CPU per "
            "million events | now: exporter CPU | now: Redis / memory | now: Redis CPU per "
            "million events |",
            "|---|---|---|---|---|---|---|",
        ]
        for traffic, label in (("", "identities come back about ten times"),
                               ("fresh_", "identities that never repeat")):
            b, n = traffic + "before_redis", traffic + "redis"
            lines.append(
                f"| {label} | {r[b + '_exporter_cpu_s_per_m']:.1f} s | "
                f"{r[b + '_over_memory']:.2f} ({r[b + '_over_memory_cpu']:.2f}) | "
                f"{r[b + '_cpu_s_per_m']:.2f} s | {r[n + '_exporter_cpu_s_per_m']:.1f} s | "
                f"{r[n + '_over_memory']:.2f} ({r[n + '_over_memory_cpu']:.2f}) | "
                f"{r[n + '_cpu_s_per_m']:.2f} s |")
    lines += [
        "",
        "Reads: what one replica's refresh of every window's estimates costs Redis (each "
        "replica refreshes when scraped, at most once a second), the default windows, every "
        "bucket key dense (the worst case). 'Every bucket': PFCOUNT over each window's bucket "
        "keys, the read before merged keys; then the store's read through merged keys: the "
        "first after the buckets turned (it merges every window's older buckets), the next "
        f"ones, and the mean over {READ_MINUTE} reads a second apart while buckets turn and "
        "events arrive a minute late. Redis CPU seconds per read (wall seconds).",
        "",
        "| breakdown | keys | every bucket | merged keys: first read | next reads | "
        "mean over a minute |",
        "|---|---|---|---|---|---|",
    ]
    for values in READ_VALUES:
        k = f"read{values}_"
        lines.append(
            f"| {f'{values} values over every window' if values else 'none (totals)'} | "
            f"{r[k + 'keys']:,.0f} ({r[k + 'used_memory_mib']:,.0f} MiB) | "
            f"{r[k + 'every_cpu_s']:.3f} s ({r[k + 'every_wall_s']:.2f} s) | "
            f"{r[k + 'first_cpu_s']:.3f} s ({r[k + 'first_wall_s']:.2f} s) | "
            f"{r[k + 'merged_cpu_s']:.3f} s ({r[k + 'merged_wall_s']:.2f} s) | "
            f"{r[k + 'minute_cpu_s']:.3f} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="load duration per run (default 8)")
    ap.add_argument("--threads", type=int, default=2, help="sender connections (default 2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale-out.md"))
    ap.add_argument("--before", metavar="REV",
                    help="also run the Redis-store rows with the exporter of git revision REV")
    args = ap.parse_args()
    if args.before:
        described = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s",
                                    args.before], check=True, capture_output=True, text=True)
        args.before_name = described.stdout.strip().split(" ", 1)[0]
    r = run(args)
    text = report(r, args)
    print(text)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
