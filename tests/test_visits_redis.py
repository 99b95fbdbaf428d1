"""The shared open-visit store on a real redis-server: one visit across several stores is
one visit; every visit is counted as started and as closed exactly once, also when stores
claim at the same time, when an answer is lost and the request is sent again, when visits
are closed early at the cap, and when the store is away for a while."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from exporter.sessions.redis import RedisSessionStore, _args
from exporter.sessions.store import ENDED, Delta, Dims, Visit
from exporter.windows.config import WindowsConfig
from tests.helpers import eventually
from tests.redis_server import RedisServer

DIMS: Dims = ("web", "Google", "search", "(none)", "desktop", "Chrome", "Windows", "DE")
OTHER_DIMS: Dims = ("web", "Direct / None", "(none)", "(none)", "mobile", "Safari", "iOS",
                    "unknown")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


class Recorder:
    def __init__(self) -> None:
        self.started: list[Dims] = []
        self.closed: list[tuple[Visit, str]] = []
        self.lock = threading.Lock()

    def on_started(self, dims: list[Dims]) -> None:
        with self.lock:
            self.started += dims

    def on_closed(self, visits: list[Visit], reason: str) -> None:
        with self.lock:
            self.closed += [(v, reason) for v in visits]


def store(server: RedisServer, **settings) -> tuple[RedisSessionStore, Recorder]:
    config = dataclasses.replace(WindowsConfig(), store=server.url,
                                 **{"session_timeout": 1.0, **settings})
    s = RedisSessionStore(config, server.client(), "t:", end_grace=settings.pop("grace", 1.0)
                          if "grace" in settings else 1.0, start_grace=1.0)
    r = Recorder()
    s.on_started, s.on_closed = r.on_started, r.on_closed
    return s, r


def delta(key: int, first: int, last: int | None = None, pages: int = 1, route: str = "/",
          dims: Dims = DIMS, flags: int = 0) -> Delta:
    d = Delta(key, dims)
    d.active(first)
    d.active(first if last is None else last)
    for i in range(pages):
        d.page_view(first + i, route)
    d.interactions = pages
    d.flags = flags
    return d


def settle(*stores: RedisSessionStore, seconds: float = 2.5) -> None:
    time.sleep(seconds)
    for s in stores:
        s.close_due(0)


def test_one_visit_over_two_stores_is_one_visit_with_the_earliest_dimensions(redis_server):
    a, ra = store(redis_server)
    b, rb = store(redis_server)
    b.add([delta(7, 2_000, 9_000, pages=2, route="/later", dims=OTHER_DIMS)], 0)
    assert b.flush()
    a.add([delta(7, 1_000, 1_500, pages=1, route="/first")], 0)
    assert a.flush()
    settle(a, b)
    assert len(ra.started) + len(rb.started) == 1
    assert (ra.started + rb.started) == [DIMS]  # the earliest activity's, though it came last
    closed = ra.closed + rb.closed
    assert len(closed) == 1
    v, reason = closed[0]
    assert (v.first, v.last, v.page_views, v.entry_route, v.exit_route, v.dims, reason) == \
        (1_000, 9_000, 3, "/first", "/later", DIMS, "timeout")


def test_a_request_sent_again_with_the_same_id_is_applied_once(redis_server):
    s, r = store(redis_server)
    args = [s.timeout, s.end_grace, s.max_open, 300, *_args(delta(1, 1_000, pages=2))]
    keys = [s.open_key, s.records_key, s._done + "same-id", s.new_key]
    first, again = s._update(keys=keys, args=args), s._update(keys=keys, args=args)
    assert first == again
    settle(s)
    assert [v.page_views for v, _ in r.closed] == [2]
    # a claim whose answer was lost is answered again, and nobody else gets its visits
    s.add([delta(2, 5_000)], 0)
    s.flush()
    time.sleep(2.5)
    claim = [s.open_key, s.records_key, s._done + "claim-id", s.new_key]
    got = s._claim(keys=claim, args=[1000, 300])
    assert s._claim(keys=claim, args=[1000, 300]) == got
    other, ro = store(redis_server)
    other.close_due(0)
    assert ro.closed == []


def test_stores_claiming_at_once_close_each_visit_once(redis_server):
    stores = [store(redis_server) for _ in range(4)]
    n = 3000
    for i in range(n):
        s, _ = stores[i % 4]
        s.add([delta(i, 1_000 + i)], 0)
    for s, _ in stores:
        assert s.flush()
    time.sleep(2.5)
    threads = [threading.Thread(target=s.close_due, args=(0,)) for s, _ in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, _ in stores:
        s.close_due(0)
    closed = [v.first for _, r in stores for v, _ in r.closed]
    started = [d for _, r in stores for d in r.started]
    assert len(closed) == n and len(set(closed)) == n
    assert len(started) == n
    assert sum(1 for _, r in stores if r.closed) > 1  # the claims really were shared


def test_an_ended_visit_waits_the_grace_for_events_of_other_stores(redis_server):
    a, ra = store(redis_server, session_timeout=60.0)
    b, rb = store(redis_server, session_timeout=60.0)
    a.add([delta(5, 1_000, route="/in", flags=ENDED)], 0)
    a.flush()
    b.add([delta(5, 2_000, route="/out")], 0)  # still in b's buffer when the end arrived
    b.flush()
    a.close_due(0)
    assert ra.closed == []  # within the grace
    time.sleep(1.5)
    a.close_due(0)
    b.close_due(0)
    closed = ra.closed + rb.closed
    assert [(v.page_views, v.exit_route, reason) for v, reason in closed] == [(2, "/out", "end")]


def test_visits_beyond_the_cap_close_early_and_are_counted_once(redis_server):
    s, r = store(redis_server, max_open_sessions=100, session_timeout=60.0)
    for i in range(150):
        s.add([delta(i, 1_000 + i)], 0)
        if i % 10 == 9:
            assert s.flush()
    assert redis_server.client().zcard(s.open_key) == 100
    evicted = [v for v, reason in r.closed if reason == "evicted"]
    assert len(evicted) == 50
    # closed before they were counted as started: counted as started then
    assert len(r.started) == 50


def test_updates_wait_while_the_store_is_away_and_beyond_the_buffer_are_dropped(redis_server):
    s, r = store(redis_server, redis_buffer=100)
    redis_server.stop()
    s.add([delta(i, 1_000 + i) for i in range(150)], 0)
    assert not s.flush()
    assert not s.up and s.errors["write"] == 1
    assert s.buffered() == 100 and s.dropped["store_unavailable"] == 50
    # updates sent once are kept apart (sent again as they were), so more take room too
    s.add([delta(i, 1_500 + i) for i in range(10)], 0)
    assert s.buffered() == 100 and s.dropped["store_unavailable"] == 60
    assert s.close_due(0) == 0 and s.errors["close"] == 1
    redis_server.start()
    assert s.flush() and s.up and s.buffered() == 0
    settle(s)
    assert len(r.closed) == 100 and len(r.started) == 100
    assert {v.page_views for v, _ in r.closed} == {1}


def test_the_sender_and_reports(redis_server):
    s, r = store(redis_server)
    s.start()
    try:
        s.add([delta(1, 1_000)], 0)
        assert eventually(lambda: s.open_sessions() == 1 and s.buffered() == 0, timeout=10)
        assert (s.store_bytes() or 0) > 0
    finally:
        s.close()


def test_the_redis_user_of_the_scaling_guide_can_run_the_visit_store(redis_server):
    # the least-privilege ACL docs/scaling.md gives, applied to a real server: updates,
    # eviction at the cap, the start and close claims and the size readings all pass with it
    root = Path(__file__).resolve().parent.parent
    line = next(line for line in (root / "docs" / "scaling.md").read_text().splitlines()
                if line.startswith("ACL SETUSER kpi "))
    rules = line.split()[3:]
    assert "~kpi:*" in rules and ">PASSWORD" in rules
    rules = ["~t:*" if r == "~kpi:*" else ">acl-pw" if r == ">PASSWORD" else r for r in rules]
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "kpi", *rules)
    config = dataclasses.replace(WindowsConfig(), store=redis_server.url, session_timeout=1.0,
                                 max_open_sessions=2)
    client = redis.Redis.from_url(f"redis://kpi:acl-pw@127.0.0.1:{redis_server.port}/0")
    s = RedisSessionStore(config, client, "t:", end_grace=1.0)
    r = Recorder()
    s.on_started, s.on_closed = r.on_started, r.on_closed
    try:
        s.add([delta(k, 1_000 * k) for k in (1, 2, 3)], 0)
        assert s.flush()
        settle(s)
        assert sorted(v.first for v, _ in r.closed) == [1_000, 2_000, 3_000]
        assert sorted(reason for _, reason in r.closed) == ["evicted", "timeout", "timeout"]
        assert len(r.started) == 3
        s.add([delta(4, 4_000)], 0)
        assert s.flush()
        s.measure()
        assert s.open_sessions() == 1 and (s.store_bytes() or 0) > 0
        assert s.errors == {"write": 0, "close": 0} and s.up
    finally:
        client.close()
        admin.execute_command("ACL", "DELUSER", "kpi")


def test_a_visit_starts_with_its_landing_even_when_that_replica_sends_it_late(redis_server):
    # a replica that is slow to send (a backlog of requests on a busy machine) passes on the
    # landing page view after another replica opened the visit with a later, internal step:
    # the visit is counted as started with the landing's source all the same, well past the
    # few seconds an ended visit waits
    config = dataclasses.replace(WindowsConfig(), store=redis_server.url, session_timeout=3.0)
    a = RedisSessionStore(config, redis_server.client(), "t:", end_grace=1.0)
    b = RedisSessionStore(config, redis_server.client(), "t:", end_grace=1.0)
    r = Recorder()
    for s in (a, b):
        s.on_started, s.on_closed = r.on_started, r.on_closed
    a.add([delta(5, 2_000, route="/step", dims=OTHER_DIMS)], 0)
    assert a.flush()
    settle(a, b, seconds=1.5)
    b.add([delta(5, 1_000, route="/landing")], 0)
    assert b.flush()
    assert eventually(lambda: a.close_due(0) + b.close_due(0) > 0 or None, timeout=15,
                      interval=0.3)
    assert r.started == [DIMS]
    assert [(v.dims, v.entry_route, v.page_views) for v, _ in r.closed] == [
        (DIMS, "/landing", 2)]
