"""What visits cost: ingest time per event with web analytics off and on (events without and
with the attributes pages send), the memory one open visit takes in the memory store, and
what the shared Redis store holds per visit. Baselines in the same run, on this machine. Not
a test: nothing here asserts a number.

    python benchmarks/visits.py                      # also part of `make bench`
    python benchmarks/visits.py --visits 100000 250000 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.payloads import make_batches  # noqa: E402
from exporter.devices import resolver_name  # noqa: E402
from exporter.pipeline import PROTOBUF  # noqa: E402
from exporter.records import LOG  # noqa: E402
from exporter.sessions.memory import MemorySessionStore  # noqa: E402
from exporter.sessions.redis import RedisSessionStore  # noqa: E402
from exporter.sessions.store import KEY_BITS, Delta  # noqa: E402
from exporter.windows.config import WindowsConfig  # noqa: E402
from tests.helpers import built  # noqa: E402
from tests.web_traffic import CLIENTS, SOURCES  # noqa: E402

BATCH = 512
ROUTES = ("/", "/shoes", "/shoes/:id", "/cart", "/checkout", "/about", "/blog/:slug")


def web_batches(count: int, seed: int = 3) -> list[bytes]:
    """Batches of page views and clicks as the browser client sends them: user agent on every
    event; referrer, URL, campaign query and screen class on page views; a country."""
    rng = random.Random(seed)
    out = []
    t0 = time.time_ns() - 60_000_000_000
    for _ in range(count):
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        kv = rl.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", "shop-web"
        scope = rl.scope_logs.add()
        for i in range(BATCH):
            rec = scope.log_records.add()
            rec.time_unix_nano = t0 + i
            visitor = rng.randrange(50_000)
            referrer, query = SOURCES[visitor % len(SOURCES)][:2]
            attrs = {"session.id": f"visit-{visitor}-{rng.randrange(3)}",
                     "user.id": f"user-{visitor}",
                     "user_agent.original": CLIENTS[visitor % len(CLIENTS)][0],
                     "geo.country.iso_code": ("DE", "US", "FR", "GB")[visitor % 4]}
            if rng.random() < 0.6:
                rec.event_name = "app.page_view"
                attrs.update({"url.path": rng.choice(ROUTES),
                              "url.full": "https://shop.example.com/p", "url.query": query,
                              "app.referrer": referrer, "app.screen.class": "desktop"})
            else:
                rec.event_name = "app.feature_used"
                attrs.update({"app.feature": "search", "app.action": "open"})
            for k, v in attrs.items():
                if v:
                    a = rec.attributes.add()
                    a.key, a.value.string_value = k, v
        out.append(req.SerializeToString())
    return out


def ingest_us_per_event(config: str, batches: list[bytes], rounds: int) -> float:
    """Median over ``rounds`` of the time one pipeline takes per event (decode, filters,
    mapping, store, observers), in microseconds, single-threaded."""
    with tempfile.TemporaryDirectory() as tmp:
        app = built(Path(tmp), config + "state: {enabled: false}\n")
        try:
            for body in batches[:4]:  # warm the caches (rule lookups, user agents, referrers)
                app.pipeline.ingest(LOG, body, PROTOBUF)
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                for body in batches:
                    app.pipeline.ingest(LOG, body, PROTOBUF)
                times.append((time.perf_counter() - started) / (len(batches) * BATCH))
            return statistics.median(times) * 1e6
        finally:
            app.stop()


def deltas(n: int, seed: int, offset: int = 0) -> list[Delta]:
    """``n`` visits of one to eight page views over a few dozen routes and dimensions."""
    rng = random.Random(seed)
    out = []
    t = int(time.time() * 1000)
    dims = [("shop-web", s[2], s[3], s[4], c[1], c[2], c[3], country)
            for s in SOURCES for c in CLIENTS for country in ("DE", "US", "FR", "GB", "unknown")]
    for i in range(n):
        d = Delta(rng.getrandbits(KEY_BITS), rng.choice(dims))  # type: ignore[arg-type]
        first = t + offset + i
        d.active(first)
        for p in range(rng.randint(1, 8)):
            d.page_view(first + p * 9_000, rng.choice(ROUTES))
            d.active(first + p * 9_000)
        d.interactions = d.page_views
        out.append(d)
    return out


def memory_bytes_per_visit(n: int) -> dict[str, float]:
    """What ``n`` open visits take in the memory store: right after they opened, and after
    as many again came and went (the dict's steady state with turnover)."""
    gc.collect()
    tracemalloc.start()
    store = MemorySessionStore(1800, n)
    base = tracemalloc.get_traced_memory()[0]
    batch = deltas(n, seed=n)
    now = time.time()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(0, n, 512):
        store.add(batch[i:i + 512], now)
    opened = tracemalloc.get_traced_memory()[0] - before
    del batch
    gc.collect()
    fresh = tracemalloc.get_traced_memory()[0] - base
    # turnover: n more visits open; the cap closes the least recently active ones
    for i in range(0, n, 512):
        store.add(deltas(min(512, n - i), seed=n + i + 1, offset=10**6), now + 1)
    gc.collect()
    steady = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert store.open_sessions() == n
    return {"fresh": fresh / n, "steady": steady / n, "estimate": store.store_bytes() / n,
            "opened_alloc": opened / n}


def redis_bytes_per_visit(n: int, tmp: Path) -> dict[str, float] | None:
    """What ``n`` open visits take in a real redis-server: MEMORY USAGE of the keys (sampled
    by Redis) and the server's used_memory growth, per visit."""
    import dataclasses
    import shutil
    if not shutil.which("redis-server"):
        return None
    from tests.redis_server import RedisServer
    server = RedisServer(tmp / "redis")
    try:
        client = server.client()
        used = int(client.info("memory")["used_memory"])
        config = dataclasses.replace(WindowsConfig(), store=server.url, redis_buffer=n + 1,
                                     max_open_sessions=n + 1)
        store = RedisSessionStore(config, client, "bench:")
        started = time.perf_counter()
        for i in range(0, n, 5000):
            store.add(deltas(min(5000, n - i), seed=i), 0)
            assert store.flush()
        elapsed = time.perf_counter() - started
        grown = int(client.info("memory")["used_memory"]) - used
        usage = sum(int(client.memory_usage(k, samples=0) or 0)
                    for k in (store.open_key, store.records_key, store.new_key))
        record = client.hget(store.records_key, client.hkeys(store.records_key)[0])
        return {"memory_usage": usage / n, "used_memory": grown / n,
                "record_bytes": float(len(record or b"")), "flush_us": elapsed / n * 1e6}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--visits", type=int, nargs="+", default=[100_000, 250_000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the numbers as JSON to this file")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "visits.md"))
    args = ap.parse_args()

    plain = make_batches(16, BATCH)
    web = web_batches(16)
    r: dict[str, object] = {"resolver": resolver_name()}
    # interleaved, so that machine noise hits every configuration alike
    runs: dict[str, list[float]] = {k: [] for k in ("off_plain", "on_plain", "off_web",
                                                    "on_web")}
    for _ in range(3):
        runs["off_plain"].append(ingest_us_per_event("web_analytics: {enabled: false}\n", plain,
                                                     args.rounds))
        runs["on_plain"].append(ingest_us_per_event("", plain, args.rounds))
        runs["off_web"].append(ingest_us_per_event("web_analytics: {enabled: false}\n", web,
                                                   args.rounds))
        runs["on_web"].append(ingest_us_per_event("", web, args.rounds))
    ingest = {k: statistics.median(v) for k, v in runs.items()}
    r["ingest_us_per_event"] = ingest
    r["memory"] = {n: memory_bytes_per_visit(n) for n in args.visits}
    with tempfile.TemporaryDirectory() as tmp:
        r["redis"] = redis_bytes_per_visit(min(args.visits), Path(tmp))

    lines = [f"# Visits ({time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, "
             f"ua-parser resolver: {r['resolver']})", "",
             "Ingest, one thread, per event (decode, denylist, enrichment, rules, store, KPI "
             "windows, visits), median of 3 x 5 rounds of 16 x 512 events:", "",
             "| events | web analytics off | on | cost of visits |", "|---|---|---|---|"]
    for label, key in (("the standard vocabulary, no web attributes", "plain"),
                       ("browser page views and clicks (user agent, referrer, URL, country)",
                        "web")):
        off, on = ingest[f"off_{key}"], ingest[f"on_{key}"]
        lines.append(f"| {label} | {off:.2f} µs | {on:.2f} µs | +{on - off:.2f} µs "
                     f"({(on / off - 1) * 100:+.0f}%) |")
    lines += ["", "Memory store, per open visit (tracemalloc: the dict, its keys, the 31-byte "
              "records and the interning tables):", "",
              "| open visits | just opened | after as many again came and went | the "
              "exporter's estimate (kpi_exporter_session_store_bytes) |", "|---|---|---|---|"]
    for n, m in r["memory"].items():  # type: ignore[union-attr]
        lines.append(f"| {n:,} | {m['fresh']:.0f} bytes | {m['steady']:.0f} bytes | "
                     f"{m['estimate']:.0f} bytes |")
    red = r["redis"]
    if isinstance(red, dict):
        lines += ["", f"Shared Redis store, {min(args.visits):,} open visits: "
                  f"{red['memory_usage']:.0f} bytes per visit by MEMORY USAGE of its keys, "
                  f"{red['used_memory']:.0f} bytes of used_memory growth; a record (JSON) is "
                  f"{red['record_bytes']:.0f} bytes; sending them took "
                  f"{red['flush_us']:.1f} µs per visit."]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
