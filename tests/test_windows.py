"""KPI windows: estimates against exact counts, event time (late, old, future), anonymous
events, conversion rate, breakdowns and their cap, and the gauges over real HTTP."""

from __future__ import annotations

import random
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collectors.windows import WindowsCollector
from exporter.config import ConfigError, load_config
from exporter.pacing import Pacer
from exporter.privacy import IdentityHasher
from exporter.rules import parse_duration
from exporter.windows import (
    BreakdownSpec, MemoryWindowStore, WindowsConfig, relative_error_bound, window_spec,
)
from exporter.windows import memory
from tests.helpers import parse_samples
from tests.otel import logger_provider

NOW = 1_790_000_000  # a fixed wall-clock second; every window test runs on an injected clock
DAY = 86400
HASHER = IdentityHasher("test-salt-0123456789abcdef")
BOUND = relative_error_bound(14)


class Clock:
    """Wall-clock seconds that a test moves by hand."""

    def __init__(self, t: float = NOW):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t


def by_window(windows: MemoryWindowStore) -> dict[str, tuple[float, float, float]]:
    """{window: (users, sessions, conversion rate)} of the totals, counts rounded as the
    gauges are."""
    return {e.window: (round(e.users), round(e.sessions), e.conversion_rate)
            for e in windows.estimates() if e.breakdown < 0}


def window_start(w, now: int) -> int:
    """The first second a window covers, as docs/kpis.md defines it: the start of the oldest
    of its buckets, the current (partial) bucket included."""
    return (now // w.bucket_seconds - w.buckets + 1) * w.bucket_seconds


def union_size(ranges: list[range]) -> int:
    """Distinct integers in a list of ranges (step 1)."""
    total, end = 0, None
    for r in sorted(ranges, key=lambda r: r.start):
        if end is None or r.start >= end:
            total += len(r)
            end = r.stop
        elif r.stop > end:
            total += r.stop - end
            end = r.stop
    return total


# -- accuracy -------------------------------------------------------------------------------------

def cohorts(n: int) -> list[tuple[range, int]]:
    """(user ids, age in seconds) of a stream with ``n`` distinct users over 30 days: most are
    recent, some return after earlier visits, so each window has its own exact count."""
    a, b, c, d, e = (int(n * f) for f in (0.6, 0.15, 0.15, 0.05, 0.05))
    return [
        (range(0, a), 60),                            # active in the last five minutes
        (range(a, a + b), 1800),                      # half an hour ago
        (range(a + b, a + b + c), 12 * 3600),         # half a day ago
        (range(0, int(n * 0.2)), 12 * 3600),          # ...and returning users seen then too
        (range(a + b + c, a + b + c + d), 3 * DAY),   # three days ago
        (range(a + b + c + d, n), 20 * DAY),          # twenty days ago
    ]


@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000])
def test_every_window_is_within_the_error_bound_of_the_exact_count(n):
    clock = Clock()
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    stream = cohorts(n)
    events_total = 0
    for users, age in stream:
        t = NOW - age
        chunk = []
        for i in users:
            # one session per visit: sessions are distinct per (user, visit)
            chunk.append((t, HASHER.hash(f"user-{i}"), HASHER.hash(f"session-{i}-{age}"),
                          i % 25 == 0, ()))
            if len(chunk) == 20_000:
                w.add(chunk)
                chunk = []
        w.add(chunk)
        events_total += len(users)
    assert w.accepted == events_total
    got = by_window(w)
    assert set(got) == {"5m", "1h", "1d", "7d", "30d"}
    observed = {}
    for spec in w.config.windows:
        start = window_start(spec, NOW)
        inside = [(users, age) for users, age in stream if NOW - age >= start]
        exact_users = union_size([users for users, _ in inside])
        exact_sessions = sum(len(users) for users, _ in inside)
        exact_conversions = sum(len(range(u.start + (-u.start) % 25, u.stop, 25))
                                for u, _ in inside)
        users, sessions, rate = got[spec.name]
        err_users = abs(users - exact_users) / exact_users
        err_sessions = abs(sessions - exact_sessions) / exact_sessions
        true_rate = exact_conversions / exact_sessions
        err_rate = abs(rate - true_rate) / true_rate
        observed[spec.name] = (exact_users, round(err_users, 5), round(err_sessions, 5),
                               round(err_rate, 5))
        assert err_users <= BOUND, (spec.name, users, exact_users)
        assert err_sessions <= BOUND, (spec.name, sessions, exact_sessions)
        # a ratio of two estimates within BOUND each
        assert err_rate <= 2 * BOUND / (1 - BOUND), (spec.name, rate, true_rate)
    # the windows must really differ, or the test proves less than it claims
    assert len({v[0] for v in observed.values()}) == 5
    print(f"\nn={n} bound={BOUND:.4f} (exact users, users err, sessions err, rate err):",
          observed)


def test_the_stated_bound_is_the_sketch_libraries_three_sigma_bound():
    assert relative_error_bound(14) == pytest.approx(0.0244, abs=0.0005)
    assert relative_error_bound(12) > relative_error_bound(14) > relative_error_bound(16)


def test_small_counts_are_exact():
    clock = Clock()
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    w.add([(NOW - 5, HASHER.hash(f"u{i % 40}"), HASHER.hash(f"s{i % 70}"), False, ())
           for i in range(500)])
    assert {k: v[:2] for k, v in by_window(w).items()} == {
        k: (40.0, 70.0) for k in ("5m", "1h", "1d", "7d", "30d")}


# -- event time -----------------------------------------------------------------------------------

def test_a_late_batch_lands_in_the_buckets_of_its_own_timestamps():
    clock = Clock()
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    w.add([(NOW - 10, HASHER.hash("now-user"), None, False, ())])
    # a batch that was held up: it arrives now, but happened two hours and two days ago
    w.add([(NOW - 2 * 3600, HASHER.hash("two-hours-ago"), None, False, ()),
           (NOW - 2 * DAY, HASHER.hash("two-days-ago"), None, False, ())])
    users = {k: v[0] for k, v in by_window(w).items()}
    assert users == {"5m": 1, "1h": 1, "1d": 2, "7d": 3, "30d": 3}
    # time moves on: the same events leave the windows as they age
    clock.t += 3600
    users = {k: v[0] for k, v in by_window(w).items()}
    assert users == {"5m": 0, "1h": 0, "1d": 2, "7d": 3, "30d": 3}
    clock.t += 30 * DAY
    assert {k: v[0] for k, v in by_window(w).items()} == dict.fromkeys(users, 0)
    assert w.sketch_bytes() == 0  # buckets no window covers are freed


# -- scrapes and ingest ---------------------------------------------------------------------------

def users_of(w: MemoryWindowStore) -> dict[str, float]:
    return {k: v[0] for k, v in by_window(w).items()}


def counting_unions(w: MemoryWindowStore, monkeypatch, during=None) -> list[bool]:
    """Records, for every union of closed buckets a scrape builds, whether the ingest lock
    was held while it was built; ``during`` runs in the middle of the first one."""
    calls: list[bool] = []
    real = w._union

    def union(sketches):
        calls.append(w.lock.locked())
        if during is not None and len(calls) == 1:
            during()
        return real(sketches)

    monkeypatch.setattr(w, "_union", union)
    return calls


def test_a_scrape_merges_closed_buckets_once_and_without_the_ingest_lock(monkeypatch):
    clock = Clock(NOW - NOW % 86400 + 3605)  # 5 s into a 10 s bucket, an hour into a day
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    w.add([(clock.t - age, HASHER.hash(f"u{age}"), None, False, ())
           for age in (5, 30, 200, 1000, 5000, 90_000)])
    calls = counting_unions(w, monkeypatch)
    assert users_of(w) == {"5m": 3, "1h": 4, "1d": 5, "7d": 6, "30d": 6}
    assert len(calls) == 5 * 3 and not any(calls)  # every window's closed buckets, unlocked
    w.add([(clock.t - 1, HASHER.hash("new"), None, False, ())])  # the current buckets
    assert users_of(w) == {"5m": 4, "1h": 5, "1d": 6, "7d": 7, "30d": 7}
    assert len(calls) == 15  # nothing built again: closed buckets did not change
    clock.t += 10  # the 5m window's current bucket closes: only its union is built again
    assert users_of(w) == {"5m": 4, "1h": 5, "1d": 6, "7d": 7, "30d": 7}
    assert len(calls) == 15 + 3


def test_a_late_event_in_a_closed_bucket_renews_the_unions_that_cover_it(monkeypatch):
    clock = Clock(NOW - NOW % 86400 + 3600)
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    w.add([(clock.t - 5, HASHER.hash("now"), None, False, ())])
    assert users_of(w) == {"5m": 1, "1h": 1, "1d": 1, "7d": 1, "30d": 1}
    calls = counting_unions(w, monkeypatch)
    # late: 2 minutes and 50 minutes ago, into buckets every window had closed
    w.add([(clock.t - 120, HASHER.hash("late-1"), None, False, ()),
           (clock.t - 3000, HASHER.hash("late-2"), None, False, ())])
    assert users_of(w) == {"5m": 2, "1h": 3, "1d": 3, "7d": 3, "30d": 3}
    # built again: the 5m, 1h and 1d windows, whose closed buckets (10 s, 1 min, 30 min) the
    # late events landed in; the 7d and 30d windows' current buckets (3 h, a day) hold them
    assert len(calls) == 3 * 3


def test_a_scrape_pauses_between_window_merges_without_the_ingest_lock(monkeypatch):
    # Sketch merges hold the interpreter lock: a scrape gives way to request threads after
    # every slice of them (a pacer on a clock that moves 1 ms a look, so it pauses at every
    # window), and never while it holds the lock ingest needs.
    clock = Clock(NOW - NOW % 86400 + 3605)
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    w.add([(clock.t - age, HASHER.hash(f"u{age}"), None, False, ())
           for age in (5, 30, 200, 1000, 5000, 90_000)])
    ticks = iter(range(10**6))
    paused: list[bool] = []
    monkeypatch.setattr(memory, "Pacer", lambda: Pacer(
        work=0.0005, pause=0.0002, clock=lambda: next(ticks) / 1000,
        sleep=lambda _seconds: paused.append(w.lock.locked())))
    assert users_of(w) == {"5m": 3, "1h": 4, "1d": 5, "7d": 6, "30d": 6}
    assert len(paused) >= 4 and not any(paused)


def test_a_union_built_while_a_late_event_lands_is_not_kept(monkeypatch):
    clock = Clock(NOW - NOW % 86400 + 3600)
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    w.add([(clock.t - 60, HASHER.hash("early"), None, False, ())])
    late = lambda: w.add([(clock.t - 90, HASHER.hash("late"), None, False, ())])  # noqa: E731
    calls = counting_unions(w, monkeypatch, during=late)
    users_of(w)  # the scrape that raced with the late event (it may count it or not)
    assert not any(calls)
    # the next scrape does not reuse a union that may have missed it
    assert users_of(w)["5m"] == 2 and users_of(w)["1h"] == 2


def test_scrapes_racing_with_late_and_current_events_leave_no_stale_union():
    clock = Clock(NOW - NOW % 86400 + 3605)
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    ages = [5, 25, 95, 250, 1200, 3000, 7000, 40_000, 200_000, 900_000]
    done = threading.Event()

    def ingest(worker: int) -> None:
        for i in range(60):
            w.add([(clock.t - ages[(i + worker) % len(ages)],
                    HASHER.hash(f"u{worker}-{i}"), None, False, ())])

    def scrape() -> None:
        while not done.is_set():
            w.estimates()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=ingest, args=(k,)) for k in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    scraper.join()
    exact = {spec.name: sum(1 for k in range(4) for i in range(60)
                            if clock.t - ages[(i + k) % len(ages)] >= window_start(spec, clock.t))
             for spec in w.config.windows}
    assert users_of(w) == exact


def test_scrapes_racing_with_events_while_buckets_turn_leave_no_stale_union():
    # The clock moves on during the race, so buckets close, unions of closed buckets are
    # built and thrown away, and old buckets leave their windows while scrapes run.
    clock = Clock(NOW - NOW % 86400 + 3605)
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    ages = [0, 5, 25, 95, 250, 1200, 3000, 7000, 40_000, 200_000, 900_000]
    stamps: list[float] = []
    done = threading.Event()
    rng = random.Random(13)
    steps = [rng.choice((0, 1, 3, 10)) for _ in range(400)]

    def ingest(worker: int) -> None:
        for i in range(80):
            t = clock.t - ages[(i + worker) % len(ages)]
            w.add([(t, HASHER.hash(f"u{worker}-{i}"), None, False, ())])
            stamps.append(t)
            time.sleep(0.0005)

    def tick() -> None:
        for step in steps:
            clock.t += step
            time.sleep(0.0002)

    def scrape() -> None:
        while not done.is_set():
            w.estimates()

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    others = [threading.Thread(target=ingest, args=(k,)) for k in range(4)]
    others.append(threading.Thread(target=tick))
    for t in scrapers + others:
        t.start()
    for t in others:
        t.join()
    done.set()
    for t in scrapers:
        t.join()
    assert clock.t > NOW - NOW % 86400 + 3605 + 1000  # buckets of every width turned
    now = int(clock.t)
    exact = {spec.name: sum(1 for t in stamps if t >= window_start(spec, now))
             for spec in w.config.windows}
    assert users_of(w) == exact
    assert len({v for v in exact.values()}) > 2  # the windows hold different numbers


def test_window_edges_follow_their_buckets():
    clock = Clock(NOW - NOW % 10 + 3)  # three seconds into a 10 s bucket
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    five = w.config.windows[0]
    assert (five.name, five.bucket_seconds, five.buckets) == ("5m", 10, 30)
    start = window_start(five, int(clock.t))
    w.add([(start, HASHER.hash("first-second"), None, False, ()),
           (start - 1, HASHER.hash("one-second-before"), None, False, ())])
    assert by_window(w)["5m"][0] == 1
    assert by_window(w)["1h"][0] == 2


def test_old_and_future_records_are_dropped_and_counted():
    clock = Clock()
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    w.add([
        (NOW - 31 * DAY, HASHER.hash("too-old"), None, False, ()),
        (NOW + 3600, HASHER.hash("far-future"), None, False, ()),
        (NOW + 120, HASHER.hash("clock-ahead"), None, False, ()),  # within max_future: now
        (0, HASHER.hash("no-timestamp"), None, False, ()),         # no timestamp: arrival time
    ])
    assert w.dropped == {"too_old": 1, "in_future": 1}
    assert by_window(w)["5m"][0] == 2
    registry = CollectorRegistry()
    registry.register(WindowsCollector(w))
    samples = parse_samples(generate_latest(registry).decode())
    assert samples[("kpi_exporter_window_records_dropped_total",
                    frozenset({("reason", "too_old")}))] == 1
    assert samples[("kpi_exporter_window_records_dropped_total",
                    frozenset({("reason", "in_future")}))] == 1
    assert samples[("app_active_users", frozenset({("window", "5m")}))] == 2


# -- anonymous events, conversions ----------------------------------------------------------------

def test_anonymous_events_count_toward_sessions_not_users():
    clock = Clock()
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    w.add([(NOW, HASHER.hash("alice"), HASHER.hash("s1"), False, ()),
           (NOW, None, HASHER.hash("s2"), False, ()),
           (NOW, None, HASHER.hash("s3"), True, ()),
           (NOW, None, None, False, ())])
    users, sessions, rate = by_window(w)["1h"]
    assert (users, sessions) == (1, 3)
    assert rate == pytest.approx(1 / 3, rel=1e-6)


def test_conversion_rate_on_a_stream_with_a_known_rate():
    clock = Clock()
    w = MemoryWindowStore(WindowsConfig(), clock=clock)
    sessions, converting = 200_000, 7_400  # a true rate of 3.7%
    events = []
    for i in range(sessions):
        s = HASHER.hash(f"session-{i}")
        events.append((NOW - i % 3000, HASHER.hash(f"user-{i % 90_000}"), s, False, ()))
        if i < converting:
            # a conversion, sometimes twice in one session: the session counts once
            events.append((NOW - 1, None, s, True, ()))
            if i % 3 == 0:
                events.append((NOW - 2, None, s, True, ()))
    for k in range(0, len(events), 50_000):
        w.add(events[k:k + 50_000])
    rate = by_window(w)["1d"][2]
    assert abs(rate - 0.037) / 0.037 <= 2 * BOUND / (1 - BOUND)
    # a conversion without a session cannot make a session convert
    w.add([(NOW, HASHER.hash("u"), None, True, ())])
    assert by_window(w)["1d"][2] == rate


def test_no_sessions_means_a_rate_of_zero():
    w = MemoryWindowStore(WindowsConfig(), clock=Clock())
    assert by_window(w)["1h"] == (0, 0, 0)


# -- breakdowns -----------------------------------------------------------------------------------

def test_breakdowns_are_capped_with_an_overflow_series():
    cfg = WindowsConfig(breakdowns=(BreakdownSpec("app.platform", "platform", max_values=3,
                                                  windows=("1h", "1d")),))
    clock = Clock()
    w = MemoryWindowStore(cfg, clock=clock)
    platforms = ["ios", "ios", "android", "web", "tv", "ios"]
    w.add([(NOW, HASHER.hash(f"u{i}"), HASHER.hash(f"s{i}"), p == "web", (p,))
           for i, p in enumerate(platforms)])
    registry = CollectorRegistry()
    registry.register(WindowsCollector(w))
    samples = parse_samples(generate_latest(registry).decode())

    def users(**labels):
        return samples.get(("app_active_users_by_platform", frozenset(labels.items())))

    assert users(window="1h", platform="ios") == 3
    assert users(window="1h", platform="android") == 1
    # the third value takes the cap's last place as the overflow series: web and tv go there
    assert users(window="1h", otel_metric_overflow="true") == 2
    assert users(window="1h", platform="web") is None
    assert users(window="5m", platform="ios") is None  # not a window of this breakdown
    assert samples[("app_conversion_rate_by_platform_ratio",
                    frozenset({("window", "1d"), ("otel_metric_overflow", "true")}))
                   ] == pytest.approx(0.5)
    assert samples[("kpi_exporter_window_overflow_records_total",
                    frozenset({("breakdown", "platform")}))] == 2
    assert samples[("app_active_users", frozenset({("window", "1h")}))] == 6
    # once every window has forgotten a value, its place under the cap is free again
    clock.t += 2 * DAY
    w.add([(int(clock.t), HASHER.hash("later"), None, False, ("tv",))])
    assert [(e.window, e.value) for e in w.estimates() if e.breakdown == 0] == [
        ("1h", "tv"), ("1d", "tv")]


def test_breakdown_values_are_cut_to_the_label_length_limit():
    cfg = WindowsConfig(breakdowns=(BreakdownSpec("plan", "plan", windows=("1h",)),))
    w = MemoryWindowStore(cfg, clock=Clock(), max_label_length=8)
    w.add([(NOW, HASHER.hash("u"), None, False, ("enterprise-plus",))])
    assert [e.value for e in w.estimates() if e.breakdown == 0] == ["enterpri"]


# -- config ---------------------------------------------------------------------------------------

def test_bucket_widths_give_30_to_60_buckets_per_window():
    specs = {s.name: (s.bucket_seconds, s.buckets) for s in WindowsConfig().windows}
    assert specs == {"5m": (10, 30), "1h": (60, 60), "1d": (1800, 48), "7d": (10800, 56),
                     "30d": (86400, 30)}
    assert window_spec(int(parse_duration("90d"))).bucket_seconds == DAY


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, message", [
    ("windows: {durations: [5m, fortnight]}\n", "c.yaml:1: windows.durations[1]: 'fortnight' is "
                                                "not a window"),
    ("windows:\n  durations:\n    - 5m\n    - 5s\n", "c.yaml:4: windows.durations[1]: '5s' is "
                                                   "not a window: write a whole number of "
                                                   "seconds from 10s to 400d"),
    ("windows: {durations: [.inf]}\n", "windows.durations[0]: inf is not a window"),
    ("windows: {precision: 30}\n", "windows.precision: expected an integer from 8 to 18"),
    ("windows: {durations: [1h], breakdowns: [{attribute: user.id}]}\n",
     "a breakdown needs a bounded attribute"),
    ("windows: {breakdowns: [{attribute: app.platform, windows: [2h]}]}\n",
     "'2h' is not one of windows.durations"),
    ("windows: {breakdowns: [{attribute: a, label: p}, {attribute: b, label: p}]}\n",
     "the label 'p' is used twice"),
    ("windows: {breakdowns: [{attribute: app.platform, windows: []}]}\n",
     "windows: expected a list of window durations"),
    ("windows: {user_attribute: session.id}\n", "sessions and users need their own attributes"),
    ("windows: {sesion_attribute: s}\n", "did you mean 'session_attribute'"),
    ("rules:\n  - metric: app_active_users\n    type: gauge\n    match: {signal: log, name: a}\n"
     "    value: {attribute: n}\n", "is a KPI window metric"),
])
def test_window_config_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert message in str(err.value)


def test_window_config_is_parsed(tmp_path):
    cfg = load_config(write(tmp_path, (
        "windows:\n  durations: [15m, 1h]\n  precision: 12\n  max_future: 1m\n"
        "  conversion_events: [app.purchase]\n"
        "  breakdowns:\n    - {attribute: app.plan, label: plan, max_values: 5}\n")), env={})
    w = cfg.windows
    assert [s.name for s in w.windows] == ["15m", "1h"]
    assert (w.precision, w.max_future, w.conversion_events) == (12, 60, ("app.purchase",))
    assert w.breakdowns == (BreakdownSpec("app.plan", "plan", 5, "unknown", ("15m", "1h")),)


# -- over HTTP, from the OpenTelemetry SDK --------------------------------------------------------

CONFIG = """
windows:
  breakdowns:
    - {attribute: app.platform, label: platform, max_values: 4}
"""


def test_sdk_events_reach_the_window_gauges(exporter_factory):
    e = exporter_factory(CONFIG)
    lp = logger_provider(e.otlp_url, service="web")
    log = lp.get_logger("app")
    now_ns = time.time_ns()
    for i in range(12):
        log.emit(event_name="app.page_view", timestamp=now_ns - 30 * 10**9,
                 attributes={"user.id": f"user-{i % 4}", "session.id": f"sess-{i % 6}",
                             "url.path": "/home", "app.platform": "ios" if i % 2 else "web"})
    # anonymous: a session without a user
    log.emit(event_name="app.page_view", attributes={"session.id": "anon-1", "url.path": "/"})
    log.emit(event_name="app.conversion",
             attributes={"session.id": "sess-1", "app.conversion.type": "purchase"})
    # a late arrival from yesterday, a record from last year and one from next week
    log.emit(event_name="app.page_view", timestamp=now_ns - 20 * 3600 * 10**9,
             attributes={"user.id": "user-yesterday", "session.id": "sess-y"})
    log.emit(event_name="app.page_view", timestamp=now_ns - 365 * DAY * 10**9,
             attributes={"user.id": "user-old", "session.id": "sess-old"})
    log.emit(event_name="app.page_view", timestamp=now_ns + 7 * DAY * 10**9,
             attributes={"user.id": "user-future", "session.id": "sess-future"})
    # a plain log line is not an event
    log.emit(body="cache warmed", attributes={"user.id": "user-log-line"})
    lp.shutdown()
    s = e.scrape()
    assert s.value("app_active_users", window="5m") == 4
    assert s.value("app_active_users", window="1d") == 5
    assert s.value("app_sessions", window="5m") == 7
    assert s.value("app_sessions", window="1d") == 8
    assert s.value("app_conversion_rate_ratio", window="5m") == pytest.approx(1 / 7)
    assert s.value("app_active_users_by_platform", window="1h", platform="ios") == 2
    assert s.value("app_active_users_by_platform", window="1h", platform="web") == 2
    assert s.value("app_active_users_by_platform", window="1h", platform="unknown") == 0
    assert s.value("app_sessions_by_platform", window="1h", platform="unknown") == 2
    assert s.value("kpi_exporter_window_records_dropped_total", reason="too_old") == 1
    assert s.value("kpi_exporter_window_records_dropped_total", reason="in_future") == 1
    # anonymous events still count as events
    assert s.value("app_events_total", event="app.page_view", service_name="web") == 16


def test_windows_can_be_turned_off(exporter_factory):
    e = exporter_factory("windows: {enabled: false}\n")
    lp = logger_provider(e.otlp_url, service="web")
    lp.get_logger("app").emit(event_name="app.page_view",
                              attributes={"user.id": "u1", "url.path": "/"})
    lp.shutdown()
    s = e.scrape()
    assert s.value("app_page_views_total", route="/", service_name="web") == 1
    assert not s.matching("app_active_users") and not s.matching("app_sessions")


def test_a_rejected_record_counts_nowhere_not_even_in_the_windows(exporter_factory):
    e = exporter_factory()
    lp = logger_provider(e.otlp_url, service="shop")
    log = lp.get_logger("app")
    # "9,99" is not a number: the conversion is rejected whole, by every rule and the windows
    log.emit(event_name="app.conversion", attributes={
        "user.id": "buyer", "session.id": "s-buyer", "app.conversion.type": "purchase",
        "app.conversion.value": "9,99"})
    log.emit(event_name="app.page_view", attributes={
        "user.id": "reader", "session.id": "s-reader", "url.path": "/"})
    lp.shutdown()
    s = e.scrape()
    assert s.value("kpi_exporter_records_rejected_total", signal="log",
                   reason="non_numeric_value") == 1
    assert s.value("app_events_total", event="app.conversion", service_name="shop") is None
    assert s.value("app_events_total", event="app.page_view", service_name="shop") == 1
    for window in ("5m", "30d"):
        assert s.value("app_active_users", window=window) == 1
        assert s.value("app_sessions", window=window) == 1
        assert s.value("app_conversion_rate_ratio", window=window) == 0
