"""The shared window store against a real redis-server: the same figures as the memory store
for the same events (event time, late and future events, breakdowns), a breakdown cap that
holds across replicas, keys that expire on their own and share a Cluster slot per window,
identities sent once per bucket, the salt fingerprint check, and a store that goes away and
comes back."""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from redis.crc import key_slot

from exporter.collectors.windows import WindowsCollector
from exporter.config import ConfigError, load_config
from exporter.privacy import IdentityHasher
from exporter.windows import (
    OVERFLOW_VALUE, BreakdownSpec, Estimate, MemoryWindowStore, WindowsConfig,
)
from exporter.windows.config import REDIS_ERROR_BOUND, WindowSpec, window_spec
from exporter.windows.redis import (
    KINDS, PFADD_CHUNK, RedisWindowStore, WindowStoreError, _Batch, _elements,
)
from tests.helpers import ROOT, ProcessExporter, eventually, parse_samples
from tests.redis_server import RedisServer

NOW = 1_790_000_000
DAY = 86400
HASHER = IdentityHasher("test-salt-0123456789abcdef")
PLATFORM = BreakdownSpec("app.platform", "platform", max_values=3, windows=("1h", "1d"))


class Clock:
    def __init__(self, t: float = NOW):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path_factory.mktemp("redis"))
    yield s
    s.stop()


@pytest.fixture
def make_store(server: RedisServer, request: pytest.FixtureRequest):
    """RedisWindowStores under a prefix of the test's own, opened and closed by the test."""
    made: list[RedisWindowStore] = []
    prefix = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[-40:] + ":"

    def make(config: WindowsConfig | None = None, clock: Clock | None = None,
             fingerprint: str = HASHER.fingerprint, url: str | None = None) -> RedisWindowStore:
        cfg = config or WindowsConfig()
        cfg.store, cfg.redis_prefix = url or server.url, prefix
        store = RedisWindowStore(cfg, fingerprint, clock=clock or Clock())
        made.append(store)
        store.open()
        return store

    yield make
    for s in made:
        s.close()


def read(store: RedisWindowStore) -> list[Estimate]:
    """Sends what the store buffers, then reads its estimates."""
    assert store.flush()
    assert store.refresh()
    estimates = store.estimates()
    assert estimates is not None
    return estimates


def totals(estimates: list[Estimate]) -> dict[str, tuple[int, int, float]]:
    return {e.window: (round(e.users), round(e.sessions), round(e.conversion_rate, 6))
            for e in estimates if e.breakdown < 0}


# -- the same figures as the memory store ---------------------------------------------------

def test_event_time_late_and_future_events_match_the_memory_store(make_store):
    clock = Clock()
    store = make_store(clock=clock)
    memory = MemoryWindowStore(WindowsConfig(), clock=clock)
    batches = [
        [(NOW - 10, HASHER.hash("now-user"), HASHER.hash("s-now"), True, ())],
        # held up: arrives now, happened two hours and two days ago
        [(NOW - 2 * 3600, HASHER.hash("two-hours-ago"), HASHER.hash("s-2h"), False, ()),
         (NOW - 2 * DAY, HASHER.hash("two-days-ago"), None, False, ())],
        [(NOW - 31 * DAY, HASHER.hash("too-old"), None, False, ()),
         (NOW + 3600, HASHER.hash("far-future"), None, False, ()),
         (NOW + 120, HASHER.hash("clock-ahead"), None, False, ()),
         (0, HASHER.hash("no-timestamp"), None, False, ()),
         (NOW, None, HASHER.hash("anonymous"), False, ()),
         (NOW, None, None, False, ())],
    ]
    for batch in batches:
        store.add(batch)
        memory.add(batch)
    assert store.dropped == {"too_old": 1, "in_future": 1, "store_unavailable": 0}
    assert memory.dropped == {"too_old": 1, "in_future": 1}
    got = totals(read(store))
    assert got == totals(memory.estimates())
    assert {k: v[0] for k, v in got.items()} == {"5m": 3, "1h": 3, "1d": 4, "7d": 5, "30d": 5}
    assert got["5m"][1:] == (2, 0.5)
    # time moves on: the events leave the windows as they age, as in memory
    clock.t += 3600
    assert totals(read(store)) == totals(memory.estimates())
    assert {k: v[0] for k, v in totals(read(store)).items()} == {
        "5m": 0, "1h": 0, "1d": 4, "7d": 5, "30d": 5}
    memory.close()


def test_many_users_are_within_the_redis_error_bound(make_store):
    clock = Clock()
    store = make_store(clock=clock)
    n = 50_000
    for start in range(0, n, 10_000):
        store.add([(NOW - (i % 3) * 1200, HASHER.hash(f"user-{i}"), HASHER.hash(f"s-{i}"),
                    i % 10 == 0, ()) for i in range(start, start + 10_000)])
    got = totals(read(store))
    # every third user was active 20 and 40 minutes ago: outside the 5m window
    exact = {"5m": n // 3 + (n % 3 > 0), "1h": n, "1d": n, "7d": n, "30d": n}
    for window, (users, sessions, rate) in got.items():
        assert abs(users - exact[window]) / exact[window] <= REDIS_ERROR_BOUND, window
        assert abs(sessions - exact[window]) / exact[window] <= REDIS_ERROR_BOUND, window
    assert abs(got["1d"][2] - 0.1) / 0.1 <= 2 * REDIS_ERROR_BOUND


# -- keys -----------------------------------------------------------------------------------

def test_keys_carry_hash_tags_and_expire_when_no_window_covers_them(make_store, server):
    clock = Clock()
    cfg = WindowsConfig(breakdowns=(PLATFORM,))
    store = make_store(cfg, clock)
    store.add([(NOW - 60 * i, HASHER.hash(f"u{i}"), HASHER.hash(f"s{i}"), i % 2 == 0,
                ("ios" if i % 2 else "web",)) for i in range(200)])
    read(store)
    client = server.client()
    prefix = cfg.redis_prefix
    keys = sorted(k.decode() for k in client.scan_iter(match=prefix + "*", count=1000))
    pattern = re.escape(prefix) + r"\{w\d+:\w+:[^}]+\}:(\d+)(?:-(\d+))?"
    data = [k for k in keys if re.fullmatch(pattern, k)]
    assert set(keys) - set(data) == {prefix + "meta", prefix + "{b:platform}:values"}
    by_tag: dict[str, set[int]] = {}
    widths = {w.bucket_seconds: w for w in cfg.windows}
    keep = {width: max(w.buckets for w in cfg.windows if w.bucket_seconds == width)
            for width in widths}
    merged = set()
    for k in data:
        tag = k[k.index("{") + 1:k.index("}")]
        by_tag.setdefault(tag, set()).add(key_slot(k.encode()))
        width, kind, group = re.match(r"w(\d+):(\w+):(.+)", tag).groups()
        assert kind in ("users", "sessions", "conversions")
        assert group == "total" or group.startswith("platform=")
        first, last = re.fullmatch(pattern, k).groups()
        ttl = client.ttl(k)
        w = int(width)
        current = NOW // w
        if last is None:
            # the window and one bucket, from the bucket's end; Redis counts real seconds
            expected = (int(first) + keep[w] + 1) * w - NOW
            assert ttl <= (keep[w] + 1) * w
        else:
            # a window's older buckets (all but the two newest) merged by the read; kept
            # until the buckets turn, and one bucket more
            assert (int(first), int(last)) == (current - widths[w].buckets + 1, current - 2)
            expected = (current + 2) * w - NOW
            merged.add((widths[w].name, kind, group.partition("=")[0]))
        assert expected - 5 <= ttl <= expected, (k, ttl, expected)
    assert merged == {(w, kind, group) for kind in ("users", "sessions", "conversions")
                      for w, group in [(w, "total") for w in ("5m", "1h", "1d", "7d", "30d")]
                      + [("1h", "platform"), ("1d", "platform")]}
    # what the windows take in the store: every bucket key and every merged key
    assert store.sketch_bytes() == sum(client.strlen(k) for k in data)
    # every bucket of one window, figure and group hashes to one slot: PFCOUNT over them
    # works on a Redis Cluster
    assert by_tag and all(len(slots) == 1 for slots in by_tag.values())
    assert any(len([k for k in data if tag in k]) > 1 for tag in by_tag)
    # the longest window, a bucket, and the minute a replica trusts an admission
    assert 0 < client.ttl(prefix + "{b:platform}:values") <= DAY + 1800 + 60
    assert client.ttl(prefix + "meta") == -1  # the salt fingerprint stays


def test_identities_already_sent_to_a_bucket_are_not_sent_again(make_store, server):
    clock = Clock()
    store = make_store(clock=clock)
    client = server.client()
    batch = [(NOW, HASHER.hash(f"u{i}"), HASHER.hash(f"s{i}"), False, ()) for i in range(1000)]

    def pfadd_calls() -> int:
        return int(client.info("commandstats").get("cmdstat_pfadd", {}).get("calls", 0))

    store.add(batch)
    assert store.flush()
    first = pfadd_calls()
    store.add(batch)  # the same users and sessions, still in the same buckets
    assert store.flush()
    assert pfadd_calls() == first
    store.add(batch + [(NOW, HASHER.hash("newcomer"), None, False, ())])
    assert store.flush()
    assert pfadd_calls() == first + 5  # the newcomer, into one bucket per tier
    users, sessions, _ = totals(read(store))["5m"]
    assert abs(users - 1001) <= 1001 * REDIS_ERROR_BOUND
    assert abs(sessions - 1000) <= 1000 * REDIS_ERROR_BOUND


def test_hashes_reach_redis_as_the_elements_a_plain_pfadd_gives(make_store, server):
    # the sender writes its PFADDs in the Redis protocol itself: the keys must hold the
    # registers of a PFADD of each hash's 8 bytes, as earlier versions wrote them
    store = make_store(clock=Clock())
    client = server.client()
    users = [HASHER.hash(f"u{i}") for i in range(10_000)]  # more than two PFADD commands
    expected = store.keys.prefix + "expected"
    key = store.keys.data(60, "users", "total", NOW // 60)
    store.add([(NOW, u, None, False, ()) for u in users[:6000]])
    assert store.flush()
    client.pfadd(expected, *[struct.pack("<q", u) for u in users[:6000]])
    assert client.get(key) == client.get(expected)
    # some already sent, some new: only the new ones are written, the union is the same
    store.add([(NOW, u, None, False, ()) for u in users[3000:]])
    assert store.flush()
    client.pfadd(expected, *[struct.pack("<q", u) for u in users[6000:]])
    assert client.get(key) == client.get(expected)
    assert client.pfcount(key) == client.pfcount(expected) > 9000


# hashes whose bytes look like the Redis protocol, or are all zero or all ones
EDGE = [struct.unpack("<q", b)[0] for b in (
    b"\r\n$8\r\n*\x00", b"\r\n\r\n\r\n\r\n", b"$-1\r\n*0\r", bytes(8), b"\xff" * 8,
    b"\n\r\x00\x00\x00\x00\x00\x80", b"*3\r\n$5\r\n", b"+OK\r\n-\r\n")] + [2**63 - 1, -2**63, 1, -1]


def test_the_sender_writes_the_bytes_redis_py_would_send():
    # the hand-written commands, byte for byte what redis-py packs for the same arguments:
    # every hash an 8-byte bulk string, PFADD_CHUNK hashes a command, whatever the bytes
    packer = redis.Connection()
    key = b"kpi:{w10:users:total}:179000000"
    ids = EDGE + [HASHER.hash(f"u{i}") for i in range(PFADD_CHUNK + 100)]
    packed = [struct.pack("<q", i) for i in ids]
    batch = _Batch()
    batch.pfadd(key, _elements(ids), len(ids))
    batch.command("EXPIRE", key, b"3600")
    batch.command("EVAL", b"return 0\r\n", b"2", key, b"kpi:{w10:users:total}:1-2")
    expected = [*packer.pack_command("PFADD", key, *packed[:PFADD_CHUNK]),
                *packer.pack_command("PFADD", key, *packed[PFADD_CHUNK:]),
                *packer.pack_command("EXPIRE", key, 3600),
                *packer.pack_command("EVAL", b"return 0\r\n", 2, key,
                                     b"kpi:{w10:users:total}:1-2")]
    assert b"".join(batch._parts) == b"".join(map(bytes, expected))
    assert len(batch) == 4
    # one hash, and none: nothing at all is written for an empty set
    one = _Batch()
    one.pfadd(key, _elements({EDGE[0]}), 1)
    assert b"".join(one._parts) == b"".join(map(bytes, packer.pack_command(
        "PFADD", key, packed[0])))
    assert _elements([]) == b""
    empty = _Batch()
    empty.pfadd(key, b"", 0)
    assert len(empty) == 0 and not empty._parts


def test_hashes_of_any_bytes_reach_every_window_as_redis_py_writes_them(make_store, server):
    # many windows over five bucket widths (some sharing one), a breakdown over some of
    # them; identities sent in two steps, the second partly already sent to the buckets
    # of the wider tiers: every bucket key holds exactly the registers of a redis-py PFADD
    # of the hashes that belong in it
    windows = (WindowSpec("20s", 20, 10), WindowSpec("40s", 40, 10), window_spec(300),
               window_spec(600), window_spec(3600), WindowSpec("2h", 7200, 60),
               window_spec(86400), window_spec(7 * 86400), window_spec(30 * 86400))
    split = BreakdownSpec("app.platform", "platform", max_values=5,
                          windows=("40s", "1h", "2h", "7d"))
    clock = Clock()
    store = make_store(WindowsConfig(windows=windows, breakdowns=(split,)), clock)
    client = server.client()
    users = EDGE + [HASHER.hash(f"u{i}") for i in range(3000)]
    fresh = [HASHER.hash(f"v{i}") for i in range(3000)]
    events = [(NOW - 15, u, u ^ 1, n % 4 == 0, (("ios", "web")[n % 2],))
              for n, u in enumerate(users)]
    store.add(events)
    assert store.flush()
    later = [(NOW, u, u ^ 1, n % 4 == 0, (("ios", "web")[n % 2],))
             for n, u in enumerate(users[::2] + fresh)]
    store.add(later)
    assert store.flush()
    expected: dict[str, set[int]] = {}
    tiers = {w.bucket_seconds for w in windows}
    split_tiers = {w.bucket_seconds for w in windows if w.name in split.windows}
    for t, user, session, converted, (value,) in events + later:
        for tag, widths in ((store.keys.group_tag(None), tiers),
                            (store.keys.group_tag("platform", value), split_tiers)):
            for width in widths:
                for kind, member in zip(KINDS, (user, session, session if converted else None)):
                    if member is not None:
                        expected.setdefault(store.keys.data(width, kind, tag, t // width),
                                            set()).add(member)
    stored = {k.decode() for k in client.scan_iter(match=store.keys.prefix + "{w*",
                                                    count=1000)}
    assert stored == set(expected)
    reference = store.keys.prefix + "reference"
    for key, members in expected.items():
        client.delete(reference)
        client.pfadd(reference, *[struct.pack("<q", m) for m in members])
        assert client.get(key) == client.get(reference), key
    got = totals(read(store))
    # the 20s window holds the second step only (the first was 15 s ago, two buckets back)
    assert near(got["20s"][0], len(users[::2]) + len(fresh))
    assert near(got["40s"][0], len(users) + len(fresh))
    assert near(got["30d"][0], len(users) + len(fresh))


def test_identities_all_sent_before_send_no_command(make_store, server):
    # nothing new to any bucket: the send writes no PFADD at all, and the connection stays
    # in step for the next one
    store = make_store(clock=Clock())
    client = server.client()
    batch = [(NOW, HASHER.hash(f"u{i}"), None, False, ()) for i in range(100)]
    store.add(batch)
    assert store.flush()
    before = client.info("commandstats")["cmdstat_pfadd"]["calls"]
    store.add(batch)
    assert store.flush()
    assert client.info("commandstats")["cmdstat_pfadd"]["calls"] == before
    store.add([(NOW, HASHER.hash("one more"), None, False, ())])
    assert totals(read(store))["1h"][0] == 101


def test_a_store_emptied_under_the_exporter_is_filled_again(make_store, server):
    # FLUSHALL raises nothing in the exporter: it must notice by itself that the store no
    # longer holds what it sent, or it would leave out every returning user until the
    # buckets turn (a day for the 30d window)
    clock = Clock()
    store = make_store(clock=clock)
    other = IdentityHasher("another-salt-0123456789abcdef")
    batch = [(NOW, HASHER.hash(f"u{i}"), HASHER.hash(f"s{i}"), False, ()) for i in range(100)]
    store.add(batch)
    assert totals(read(store))["30d"][:2] == (100, 100)
    server.client().flushall()
    store.add(batch[:10])
    # what it had sent to the current buckets is sent again, not only the users seen since
    assert totals(read(store)) == {w: (100, 100, 0.0) for w in ("5m", "1h", "1d", "7d", "30d")}
    # and the salt guard is back in place
    with pytest.raises(WindowStoreError, match="another identity salt"):
        make_store(fingerprint=other.fingerprint)


def test_a_store_restarted_without_its_keys_between_two_sends_is_filled_again(tmp_path: Path):
    # Redis restarted faster than the exporter sends: the client reconnects without an error
    server = RedisServer(tmp_path / "redis")
    try:
        clock = Clock()
        store = RedisWindowStore(WindowsConfig(store=server.url), HASHER.fingerprint,
                                 clock=clock)
        store.open()
        batch = [(NOW, HASHER.hash(f"u{i}"), None, False, ()) for i in range(50)]
        store.add(batch)
        assert totals(read(store))["1d"][0] == 50
        server.kill()
        server.start()
        store.add(batch)
        assert totals(read(store))["1d"][0] == 50
        assert store.errors == {"write": 0, "read": 0}
        store.close()
    finally:
        server.stop()


# -- reads through merged keys ---------------------------------------------------------------

ALL = BreakdownSpec("app.platform", "platform", max_values=5,
                    windows=("5m", "1h", "1d", "7d", "30d"))
# one event in each of many buckets of every window, a platform each
SPREAD = [NOW - t for t in (0, 10, 25, 40, 130, 290, 700, 3000, 3590, 7200, 40_000, 80_000,
                            200_000, 600_000, 1_000_000, 2_000_000, 2_500_000)]


def spread(tag: str, times: list[int] = SPREAD) -> list:
    return [(t, HASHER.hash(f"{tag}-u{n}-{k}"), HASHER.hash(f"{tag}-s{n}-{k}"), k % 3 == 0,
             (("ios", "web", "tv")[k % 3],))
            for n, t in enumerate(times) for k in range(4)]


def direct(store: RedisWindowStore, client, now: float) -> dict[tuple[str, str], tuple]:
    """Every window's figures by PFCOUNT over all its bucket keys, as reads were before
    merged keys: the ground truth a read through merged keys must equal exactly."""
    out = {}
    values = [""] + [v for v in ("ios", "web", "tv")]
    for w in store.config.windows:
        last = int(now) // w.bucket_seconds
        for value in values:
            tag = store.keys.group_tag("platform", value) if value else store.keys.group_tag(None)
            out[(w.name, value)] = tuple(
                client.pfcount(*[store.keys.data(w.bucket_seconds, kind, tag, b)
                                 for b in range(last - w.buckets + 1, last + 1)])
                for kind in ("users", "sessions", "conversions"))
    return out


def near(estimate: int, exact: int) -> bool:
    return abs(estimate - exact) <= max(1.0, exact * REDIS_ERROR_BOUND)


def figures(estimates: list[Estimate]) -> dict[tuple[str, str], tuple]:
    return {(e.window, e.value): (int(e.users), int(e.sessions), int(e.conversions))
            for e in estimates if e.users or e.sessions or e.breakdown < 0}


def test_a_window_read_through_merged_keys_equals_every_bucket_read(make_store, server):
    clock = Clock()
    store = make_store(WindowsConfig(breakdowns=(ALL,)), clock)
    store.add(spread("a"))
    got = figures(read(store))
    truth = direct(store, server.client(), clock.t)
    assert got == {k: v for k, v in truth.items() if k[1] == "" or any(v)}
    assert near(got[("30d", "")][0], len(SPREAD) * 4) and near(got[("30d", "")][2],
                                                                 len(SPREAD) * 2)
    # read again: from the merged keys built by the first read
    assert figures(read(store)) == got
    # a minute on, the 5m and 1h windows' buckets have turned: new merged keys
    clock.t += 60
    assert figures(read(store)) == {k: v for k, v in direct(store, server.client(),
                                                            clock.t).items()
                                    if k[1] == "" or any(v)}


def test_an_event_late_into_merged_buckets_still_counts(make_store, server):
    # the reader builds merged keys; then another replica, its clock a bucket of the 5m
    # window behind, adds events hours and days late, and one a bucket late by its clock
    reader_clock, writer_clock = Clock(NOW + 10), Clock(NOW)
    reader = make_store(WindowsConfig(breakdowns=(ALL,)), reader_clock)
    writer = make_store(WindowsConfig(breakdowns=(ALL,)), writer_clock)
    reader.add(spread("a"))
    read(reader)
    late = [NOW - 10, NOW - 200, NOW - 3000, NOW - 50_000, NOW - 500_000, NOW - 2_000_000]
    writer.add(spread("late", late))
    assert writer.flush()
    got = figures(read(reader))
    truth = direct(reader, server.client(), reader_clock.t)
    assert got == {k: v for k, v in truth.items() if k[1] == "" or any(v)}
    assert near(got[("30d", "")][0], (len(SPREAD) + len(late)) * 4)
    # the event a bucket late by the writer's clock is two buckets old by the reader's: in
    # its merged key of the 5m window, into which the writer merged it
    assert near(got[("5m", "")][0], 4 * (len([t for t in SPREAD if t > NOW + 10 - 300])
                                         + len([t for t in late if t > NOW + 10 - 300])))


def test_replicas_building_merged_keys_at_once_read_the_union(make_store, server):
    # two readers and a writer of late events, concurrently: whatever the interleaving of
    # builds, deletes and counts, once the writes stop both read what every bucket holds
    clock = Clock()
    cfg = WindowsConfig(breakdowns=(ALL,))
    a, b, writer = make_store(cfg, clock), make_store(WindowsConfig(breakdowns=(ALL,)), clock), \
        make_store(WindowsConfig(breakdowns=(ALL,)), clock)
    writer.add(spread("base"))
    assert writer.flush()
    stop = threading.Event()
    failures: list[str] = []

    def keep_reading(store: RedisWindowStore) -> None:
        while not stop.is_set():
            if not store.refresh():
                failures.append("read failed")

    threads = [threading.Thread(target=keep_reading, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    try:
        for n in range(40):
            writer.add(spread(f"late{n}", [NOW - 30 - 7 * n, NOW - 4000 - 900 * n,
                                           NOW - 90_000 - 20_000 * n]))
            assert writer.flush()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures
    truth = {k: v for k, v in direct(a, server.client(), clock.t).items()
             if k[1] == "" or any(v)}
    assert figures(read(a)) == truth == figures(read(b))
    assert near(truth[("30d", "")][0], 4 * (len(SPREAD) + 3 * 40))


def test_scripts_are_loaded_again_after_a_restart(tmp_path: Path):
    # a restart (here with the append-only file: the keys stay) or SCRIPT FLUSH empties
    # Redis' script cache; the next read and the next breakdown admission load them again
    server = RedisServer(tmp_path / "redis", aof=True)
    try:
        clock = Clock()
        store = RedisWindowStore(WindowsConfig(store=server.url, breakdowns=(ALL,)),
                                 HASHER.fingerprint, clock=clock)
        store.open()
        store.add(spread("a"))
        before = figures(read(store))
        client = server.client()
        shas = [store._window.sha, store._admit.sha]
        assert client.script_exists(*shas) == [True, True]
        server.kill()
        server.start()
        client = server.client()
        assert client.script_exists(*shas) == [False, False]
        assert figures(read(store)) == before
        client.script_flush()
        store.add([(NOW, HASHER.hash("new"), None, False, ("android",))])
        after = figures(read(store))
        assert near(after[("30d", "")][0], len(SPREAD) * 4 + 1)
        assert after[("30d", "android")][0] == 1
        assert client.script_exists(*shas) == [True, True]
        assert store.errors == {"write": 0, "read": 0}
        store.close()
    finally:
        server.stop()


def test_a_read_under_way_while_the_buckets_turn_counts_every_bucket(make_store, server):
    # the reader, in the last second of a 5m-window bucket, finds its merged keys missing and
    # is about to build them; meanwhile a replica whose clock has passed into the next bucket
    # reads (building the merged keys of its own bucket) and writes events that came late
    # into buckets both merged keys hold
    cfg = WindowsConfig(breakdowns=(ALL,))
    reader_clock, ahead_clock = Clock(NOW + 9), Clock(NOW + 10)
    reader = make_store(cfg, reader_clock)
    ahead = make_store(WindowsConfig(breakdowns=(ALL,)), ahead_clock)
    ahead.add(spread("a"))
    assert ahead.flush()
    client = server.client()
    builds = []
    counts = reader._counts

    def interleaved(reads, build):
        if build and not builds:
            builds.append(len(reads))
            read(ahead)
            ahead.add(spread("late", [NOW - 25, NOW - 3000, NOW - 50_000]))
            assert ahead.flush()
        return counts(reads, build)

    reader._counts = interleaved  # type: ignore[method-assign]
    got = figures(read(reader))
    assert builds  # the read did build merged keys, with the other replica's writes between
    truth = direct(reader, client, reader_clock.t)
    assert got == {k: v for k, v in truth.items() if k[1] == "" or any(v)}
    assert near(got[("30d", "")][0], 4 * (len(SPREAD) + 3))
    # the replica ahead built its merged keys before the late events: they were merged in
    assert figures(read(ahead)) == {k: v for k, v in direct(ahead, client,
                                                            ahead_clock.t).items()
                                    if k[1] == "" or any(v)}
    # and the reader's next read, through the keys it built, is the same as its first
    assert figures(read(reader)) == got


def test_merged_keys_keep_their_expiry_and_are_built_again_once_expired(make_store, server):
    clock = Clock()
    store = make_store(WindowsConfig(breakdowns=(ALL,)), clock)
    client = server.client()
    store.add(spread("a"))
    first = figures(read(store))
    merged = list(client.scan_iter(match=store.keys.prefix + "{w*-*", count=1000))
    assert merged
    ttls = {k: client.ttl(k) for k in merged}
    assert all(ttl > 0 for ttl in ttls.values())
    # an event an hour late merged into them: PFMERGE keeps a key's expiry
    store.add([(NOW - 3000, HASHER.hash("late"), HASHER.hash("late-s"), False, ("ios",))])
    assert store.flush()
    assert all(0 < client.ttl(k) <= ttls[k] for k in merged)
    assert figures(read(store))[("1d", "")][0] == first[("1d", "")][0] + 1
    # expired (as Redis does it: the key is gone): the next read builds them again
    for k in merged:
        client.pexpire(k, 1)
    time.sleep(0.05)
    assert client.exists(*merged) == 0
    got = figures(read(store))
    assert got == {k: v for k, v in direct(store, client, clock.t).items()
                   if k[1] == "" or any(v)}
    assert got[("1d", "")][0] == first[("1d", "")][0] + 1
    assert client.exists(*merged) == len(merged)


@pytest.mark.parametrize("loss", ["flushall", "restart"])
def test_merged_keys_after_the_store_lost_its_keys_hold_what_replicas_send_again(
        loss, tmp_path: Path):
    # the store loses every key (FLUSHALL, a restart without persistence); the replica a
    # bucket ahead reads first, writes the meta key again and builds its merged keys from
    # nothing; then the other notices all the same (another epoch in the meta key, or
    # another run id) and sends again what it sent to its current buckets, one of which
    # that merged key holds
    server = RedisServer(tmp_path / "redis")
    stores: list[RedisWindowStore] = []
    try:
        def store(clock: Clock) -> RedisWindowStore:
            s = RedisWindowStore(WindowsConfig(store=server.url), HASHER.fingerprint,
                                 clock=clock)
            stores.append(s)
            s.open()
            return s

        reader_clock, writer_clock = Clock(NOW + 10), Clock(NOW)
        reader, writer = store(reader_clock), store(writer_clock)
        writer.add(spread("a", [NOW, NOW - 10, NOW - 3000]))
        assert writer.flush()
        before = figures(read(reader))
        if loss == "flushall":
            server.client().flushall()
        else:
            server.kill()
            server.start()
        got = figures(read(reader))  # merged keys built again, from nothing
        assert got != before and not got[("5m", "")][0]
        assert writer.flush()  # notices, and sends again
        client = server.client()
        got = figures(read(reader))
        assert got == {k: v for k, v in direct(reader, client, reader_clock.t).items()
                       if k[1] == "" or any(v)}
        # the writer's previous 5m bucket is in the reader's merged key: counted; the
        # event 50 minutes ago was in no bucket the writer still remembered: lost
        assert got[("5m", "")] == before[("5m", "")] == (8, 8, 4)
        assert got[("1h", "")][0] == 8 < before[("1h", "")][0]
        assert figures(read(writer)) == {k: v for k, v in direct(writer, client,
                                                                 writer_clock.t).items()
                                         if k[1] == "" or any(v)}
        assert [s.errors for s in stores] == [{"write": 0, "read": 0}] * 2
    finally:
        for s in stores:
            s.close()
        server.stop()


# -- breakdowns -----------------------------------------------------------------------------

def test_the_breakdown_cap_holds_across_replicas(make_store):
    clock = Clock()
    cfg = WindowsConfig(breakdowns=(PLATFORM,))
    a = make_store(cfg, clock)
    b = make_store(WindowsConfig(breakdowns=(PLATFORM,)), clock)
    a.add([(NOW, HASHER.hash("a1"), None, False, ("ios",))])
    assert a.flush()
    b.add([(NOW, HASHER.hash("b1"), None, False, ("android",)),
           (NOW, HASHER.hash("b2"), None, False, ("web",)),
           (NOW, HASHER.hash("b3"), None, False, ("ios",))])
    assert b.flush()
    a.add([(NOW, HASHER.hash("a2"), None, False, ("tv",))])
    assert a.flush()
    # max_values 3: two values and the overflow; first come, first admitted, whichever
    # replica saw them
    assert (a.overflow, b.overflow) == ([1], [1])
    for store in (a, b):
        split = {(e.window, e.value): round(e.users) for e in read(store) if e.breakdown == 0}
        assert split == {(w, v): n for w in ("1h", "1d")
                         for v, n in (("ios", 2), ("android", 1), (OVERFLOW_VALUE, 2))}
    registry = CollectorRegistry()
    registry.register(WindowsCollector(a))
    samples = parse_samples(generate_latest(registry).decode())
    assert samples[("app_active_users_by_platform",
                    frozenset({("window", "1d"), ("otel_metric_overflow", "true")}))] == 2
    assert samples[("app_active_users_by_platform",
                    frozenset({("window", "1d"), ("platform", "ios")}))] == 2


def test_breakdown_values_with_any_characters_are_kept_apart(make_store):
    clock = Clock()
    cfg = WindowsConfig(breakdowns=(BreakdownSpec("app.platform", "platform", max_values=10,
                                                  windows=("1h",)),))
    store = make_store(cfg, clock)
    odd = ["a}b", "{x}", "a:b", "é", "x" * 300, "nul\x00"]
    store.add([(NOW, HASHER.hash(v), None, False, (v,)) for v in odd])
    got = {e.value: round(e.users) for e in read(store) if e.breakdown == 0}
    assert got == {"a}b": 1, "{x}": 1, "a:b": 1, "é": 1, "x" * 256: 1, "nul\ufffd": 1}


# -- the salt -------------------------------------------------------------------------------

def test_a_replica_with_another_salt_is_refused(make_store):
    make_store()
    other = IdentityHasher("another-salt-0123456789abcdef")
    with pytest.raises(WindowStoreError) as err:
        make_store(fingerprint=other.fingerprint)
    message = str(err.value)
    assert "another identity salt" in message and "KPI_EXPORTER_SALT" in message
    assert other.fingerprint in message and "test-salt" not in message


def test_the_shared_store_needs_a_configured_salt(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("windows: {store: 'redis://127.0.0.1:6379/0'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert "set privacy.salt or KPI_EXPORTER_SALT" in str(err.value)
    load_config(str(path), env={"KPI_EXPORTER_SALT": "s" * 32})


@pytest.mark.parametrize("text, message", [
    ("windows: {store: 'http://redis:6379'}", "neither 'memory' nor a redis://"),
    ("windows: {store: 'redis://:6379/0'}", "names no host"),
    ("windows: {store: 'redis://r:6379/zero'}", "must be a number"),
    ("windows: {store: 'redis://r:6379/0?ssl_ca_certs=/x'}", "applies to rediss://"),
    ("windows: {store: 'rediss://r:6379/0?timeout=3'}", "unknown option 'timeout'"),
    ("windows: {store: 42}", "expected 'memory' or a redis:// URL"),
    ("windows: {redis_prefix: '{kpi}:'}", "no braces"),
    ("windows: {redis_buffer: 10}", "windows.redis_buffer: expected an integer from 100 to "
                                      "10000000 (the events to hold"),
    ("windows: {store: 'redis://r:6379/0', precision: 12}", "precision applies to the memory"),
    ("server: {reuse_port: true, otlp_listen: '127.0.0.1:4318', "
     "metrics_listen: '127.0.0.1:4318'}", "metrics_listen needs its own address"),
    ("server: {reuse_port: 'yes'}", "reuse_port: expected true or false"),
])
def test_store_settings_are_checked_at_load(tmp_path: Path, text: str, message: str):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\nprivacy: {salt: 0123456789abcdef0123}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert message in str(err.value)


def test_the_store_password_is_never_shown(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("windows: {store: 'redis://kpi:s3cret-pw@127.0.0.1:6379/0'}\n"
                    "privacy: {salt: 0123456789abcdef0123}\n")
    config = load_config(str(path), env={})
    assert config.windows.store == "redis://kpi:s3cret-pw@127.0.0.1:6379/0"
    for shown in (repr(config.windows), config.windows.store_display, repr(config.raw)):
        assert "s3cret" not in shown
    assert config.windows.store_display == "redis://kpi:***@127.0.0.1:6379/0"
    env = {"KPI_EXPORTER_WINDOWS_STORE": "rediss://u:pw@h:1/2"}
    bad = load_config(None, env={**env, "KPI_EXPORTER_SALT": "s" * 32},
                      overrides={"windows_store": "redis://x:y@h:1/0"})
    assert bad.windows.store == "redis://x:y@h:1/0"  # the flag wins over the environment


@pytest.mark.parametrize("password", ["p#ss", "pa/ss", "pa?ss", "pa[ss", "#pass", "/pass"])
def test_a_password_with_unencoded_characters_is_refused_without_showing_it(password: str):
    url = f"redis://kpi:{password}word@127.0.0.1:6379/0"
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"KPI_EXPORTER_WINDOWS_STORE": url, "KPI_EXPORTER_SALT": "s" * 32})
    message = str(err.value)
    assert password not in message and "kpi:***@127.0.0.1:6379/0" in message
    assert "percent-encode" in message


def test_a_password_with_an_at_sign_or_colon_is_hidden():
    # the client takes the user information up to the last '@', as the parser does
    config = load_config(None, env={"KPI_EXPORTER_WINDOWS_STORE": "redis://kpi:p@ss:w@h:1/0",
                                    "KPI_EXPORTER_SALT": "s" * 32})
    assert config.windows.store_display == "redis://kpi:***@h:1/0"


def test_store_errors_do_not_log_the_commands_arguments(make_store, server, caplog):
    # a pipeline's error quotes its command; its arguments are identity hashes and
    # breakdown values, which the log never carries
    store = make_store(WindowsConfig(breakdowns=(PLATFORM,)), Clock())
    client = server.client()
    used = int(client.info("memory")["used_memory"])
    caplog.set_level(logging.INFO, logger="kpi_exporter")
    client.config_set("maxmemory", used // 2)
    client.config_set("maxmemory-policy", "noeviction")
    try:
        store.add([(NOW, HASHER.hash(f"u{i}"), None, False, (f"secret-value-{i}",))
                   for i in range(50)])
        assert not store.flush()
    finally:
        client.config_set("maxmemory", 0)
    text = caplog.text
    assert "maxmemory" in text and "failed" in text
    assert "secret-value" not in text and "Command #" not in text
    assert "PFADD failed" in text  # the command's name, without its keys and arguments
    assert "\ufffd" not in text and all(c.isprintable() for line in text.splitlines()
                                         for c in line)
    # every reply of the failed pipeline was read: the connection serves the retry
    assert totals(read(store))["1h"][0] == 50


def test_the_redis_user_of_the_scaling_guide_can_run_the_store(make_store, server, request):
    # the least-privilege ACL docs/scaling.md gives, applied to a real server: writes,
    # breakdown admission (Lua), reads, size, and the restart check all pass with it
    line = next(line for line in (ROOT / "docs" / "scaling.md").read_text().splitlines()
                if line.startswith("ACL SETUSER kpi "))
    prefix = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[-40:] + ":"  # make_store's
    rules = line.split()[3:]
    assert "~kpi:*" in rules and ">PASSWORD" in rules
    rules = [f"~{prefix}*" if r == "~kpi:*" else ">acl-pw" if r == ">PASSWORD" else r
             for r in rules]
    client = server.client()
    client.execute_command("ACL", "SETUSER", "kpi", *rules)
    try:
        clock = Clock()
        store = make_store(WindowsConfig(breakdowns=(PLATFORM,)), clock,
                           url=f"redis://kpi:acl-pw@127.0.0.1:{server.port}/0")
        assert store._server.get("run_id")  # INFO is allowed: restarts are noticed
        store.add([(NOW, HASHER.hash(f"u{i}"), HASHER.hash(f"s{i}"), i % 2 == 0,
                    ("ios" if i % 2 else "web",)) for i in range(20)])
        got = read(store)
        assert totals(got)["1h"] == (20, 20, 0.5)
        assert {(e.window, e.value): round(e.users) for e in got if e.breakdown == 0} == {
            (w, v): 10 for w in ("1h", "1d") for v in ("ios", "web")}
        # an hour late, into a bucket a merged key holds: the writer merges it in
        store.add([(NOW - 3600, HASHER.hash("late"), None, False, ("tv",))])
        assert totals(read(store))["1d"][0] == 21 and store.sketch_bytes()
        assert list(client.scan_iter(match=prefix + "{w*-*"))  # read through merged keys
        # a minute on, the store loses its keys: the meta key written again, what was sent
        # to the current buckets sent again (merged into the merged keys that hold them),
        # the merged keys of the new buckets built
        clock.t += 60
        client.delete(*client.scan_iter(match=prefix + "*"))
        # (the late user is in the current bucket of the 7d and 30d windows, not of 1d)
        assert totals(read(store)) == {"5m": (20, 20, 0.5), "1h": (20, 20, 0.5),
                                       "1d": (20, 20, 0.5), "7d": (21, 20, 0.5),
                                       "30d": (21, 20, 0.5)}
        assert store.errors == {"write": 0, "read": 0}
    finally:
        client.execute_command("ACL", "DELUSER", "kpi")


# -- a store that goes away -----------------------------------------------------------------

def test_an_unreachable_store_buffers_drops_counts_and_recovers(tmp_path: Path, caplog):
    server = RedisServer(tmp_path / "redis", password="pw-never-logged")
    try:
        clock = Clock()
        cfg = WindowsConfig(store=server.url, redis_prefix="outage:", redis_buffer=100)
        store = RedisWindowStore(cfg, HASHER.fingerprint, clock=clock)
        store.open()
        store.add([(NOW, HASHER.hash(f"u{i}"), None, False, ()) for i in range(10)])
        assert totals(read(store))["5m"][0] == 10

        caplog.set_level(logging.INFO, logger="kpi_exporter")
        server.stop()
        store.add([(NOW, HASHER.hash(f"v{i}"), None, False, ()) for i in range(30)])
        assert not store.flush()
        assert not store.up and store.estimates() is None
        assert store.errors["write"] >= 1
        # the buffer holds redis_buffer events; what does not fit is dropped and counted
        store.add([(NOW, HASHER.hash(f"w{i}"), None, False, ()) for i in range(100)])
        assert store.buffered_events() == 100
        assert store.dropped["store_unavailable"] == 30
        registry = CollectorRegistry()
        registry.register(WindowsCollector(store))
        samples = parse_samples(generate_latest(registry).decode())
        assert samples[("kpi_exporter_window_store_up", frozenset())] == 0
        assert samples[("kpi_exporter_window_store_buffered_events", frozenset())] == 100
        assert not any(name.startswith("app_") for name, _ in samples)

        server.start()
        assert store.flush() and store.up
        assert store.buffered_events() == 0
        # the 10 from before and the 100 buffered: the store had no persistence, so the
        # first 10 are gone with the restart, and sent again only by new events
        assert totals(read(store))["5m"][0] == 100
        text = caplog.text
        assert "failed" in text and "answers again" in text
        assert "pw-never-logged" not in text
        store.close()
    finally:
        server.stop()


def test_the_collector_reports_the_store_up_and_its_size(make_store):
    store = make_store(clock=Clock())
    store.add([(NOW, HASHER.hash("u"), HASHER.hash("s"), False, ())])
    read(store)
    registry = CollectorRegistry()
    registry.register(WindowsCollector(store))
    samples = parse_samples(generate_latest(registry).decode())
    assert samples[("kpi_exporter_window_store_up", frozenset())] == 1
    assert samples[("kpi_exporter_window_sketch_bytes", frozenset())] > 0
    assert samples[("app_active_users", frozenset({("window", "5m")}))] == 1
    assert samples[("kpi_exporter_window_store_errors_total",
                    frozenset({("operation", "write")}))] == 0


def test_estimates_come_from_the_background_reader(make_store):
    store = make_store(clock=Clock())
    store.start()
    store.add([(NOW, HASHER.hash("u"), None, False, ())])
    got = eventually(lambda: (store.estimates() or [None])[0], timeout=10)
    assert got is not None
    assert eventually(lambda: round(store.estimates()[0].users) == 1, timeout=10)
    started = time.monotonic()
    store.estimates()
    assert store.estimates() is not None
    assert time.monotonic() - started < 30  # not a timing test: the call returns at all


def test_serve_refuses_to_start_on_a_store_filled_with_another_salt(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", password="pw-never-logged")
    try:
        first = ProcessExporter(["--windows-store", server.url, "--state-dir",
                                 str(tmp_path / "a")],
                                env={"KPI_EXPORTER_SALT": "first-salt-0123456789abcdef"})
        try:
            assert first.scrape().value("kpi_exporter_window_store_up") == 1
        finally:
            first.close()
        with pytest.raises(RuntimeError) as err:
            ProcessExporter(["--windows-store", server.url, "--state-dir", str(tmp_path / "b")],
                            env={"KPI_EXPORTER_SALT": "second-salt-0123456789abcdef"})
        log = str(err.value)
        assert "exited with 2" in log or "another identity salt" in log
        assert "another identity salt" in log and "KPI_EXPORTER_SALT" in log
        assert "pw-never-logged" not in log and "second-salt" not in log
        assert "redis://default:***@127.0.0.1" in log
    finally:
        server.stop()


def test_a_breakdown_value_stays_while_its_events_are_in_the_window(make_store):
    # a replica asks the store about a value it admitted at most once a minute, so the
    # value's last-seen time in the store may be a minute older than its last event
    clock = Clock()
    cfg = WindowsConfig(breakdowns=(BreakdownSpec("app.platform", "platform", max_values=5,
                                                  windows=("5m",)),))
    store = make_store(cfg, clock)
    store.add([(NOW, HASHER.hash("first"), None, False, ("ios",))])
    assert store.flush()
    clock.t += 59
    store.add([(int(clock.t), HASHER.hash("second"), None, False, ("ios",))])
    assert store.flush()
    clock.t += 260  # the second event is 260 s old: inside the 5m window
    split = {(e.window, e.value): round(e.users) for e in read(store) if e.breakdown == 0}
    assert split == {("5m", "ios"): 1}
