"""Visits in one exporter: what opens, extends, ends and closes a visit, what it counts as
(bounce, duration, page views, entry and exit page, source, device, country), the bounds on
open visits and label values, the attributes derived at ingest, the config, and visits across
a restart. Time is a clock the test moves."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from exporter.app import App
from exporter.config import ConfigError, load_config
from exporter.records import LOG, Batch, Record
from exporter.sessions.memory import RECORD
from exporter.state import STATE_FILE
from tests.helpers import built, parse_samples

T0 = 1_800_000_000.0
SVC = "web"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
          "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1")


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Site:
    """An exporter built on a clock, and events sent to it as batches."""

    def __init__(self, tmp: Path, config: str = "", clock: Clock | None = None):
        self.clock = clock or Clock()
        self.app: App = built(tmp, config, clock=self.clock)

    def send(self, *events: tuple[str, str, float, dict[str, Any]]) -> None:
        """(event name, session id, seconds after T0, attributes) each."""
        batch = Batch(LOG)
        batch.records = [Record(LOG, name, int((T0 + t) * 1e9),
                                {"service.name": SVC, "session.id": s, **attrs})
                         for name, s, t, attrs in events]
        self.app.pipeline.ingest_batch(batch)

    def later(self, seconds: float) -> int:
        self.clock.t += seconds
        assert self.app.sessions is not None
        return self.app.sessions.close_due()

    def samples(self, prefix: str = "app_session") -> dict[Any, float]:
        return {k: v for k, v in parse_samples(generate_latest(self.app.registry).decode())
                .items() if k[0].startswith(prefix)}

    def value(self, name: str, **labels: str) -> float:
        got = [v for (n, lab), v in self.samples(name).items()
               if n == name and set(labels.items()) <= lab]
        return sum(got)


def pv(s: str, t: float, route: str = "/", **attrs: Any) -> tuple[str, str, float, dict]:
    return ("app.page_view", s, t, {"url.path": route, **attrs})


@pytest.fixture
def site(tmp_path) -> Site:
    return Site(tmp_path)


def test_a_visit_closes_after_the_timeout_without_events(site):
    site.send(pv("a", 0, "/"), pv("a", 60, "/shoes"))
    assert site.later(29 * 60) == 0  # 29 minutes after the last event arrived: still open
    site.send(pv("a", 1800, "/cart"))  # arrives: the visit goes on
    assert site.later(29 * 60) == 0
    assert site.later(61) == 1
    assert site.value("app_sessions_closed_total") == 1
    assert site.value("app_session_page_views_sum") == 3
    assert site.value("app_session_duration_seconds_sum") == 1800
    assert site.value("app_session_entries_total", route="/") == 1
    assert site.value("app_session_exits_total", route="/cart") == 1


def test_bounces_are_visits_with_at_most_one_interactive_event(site):
    site.send(pv("one-page", 0),
              pv("two-pages", 0), pv("two-pages", 5),
              pv("page-and-click", 0), ("app.feature_used", "page-and-click", 3, {}),
              pv("page-and-scroll", 0), ("app.scroll", "page-and-scroll", 40,
                                         {"app.interactive": False}),
              ("app.feature_used", "one-custom-event", 0, {}))
    site.later(3600)
    assert site.value("app_sessions_closed_total") == 5
    # a single page view, a page view with a non-interactive event, a single custom event
    assert site.value("app_sessions_bounced_total") == 3
    # the non-interactive event lengthens its visit; the others last from first to last event
    assert site.value("app_session_duration_seconds_sum") == 5 + 3 + 40
    assert site.value("app_session_duration_seconds_bucket", le="0.0") == 2
    assert site.value("app_session_page_views_sum") == 5
    assert site.value("app_session_page_views_bucket", le="1.0") == 4


def test_entry_and_exit_pages_follow_event_time_not_arrival(site):
    site.send(pv("a", 20, "/second"))
    site.send(pv("a", 10, "/first"), pv("a", 40, "/last"), ("app.feature_used", "a", 50, {}))
    site.send(pv("a", 30, "/third"))
    site.later(3600)
    assert site.value("app_session_entries_total", route="/first") == 1
    assert site.value("app_session_exits_total", route="/last") == 1
    assert site.value("app_session_duration_seconds_sum") == 40


def test_an_end_event_closes_the_visit_and_a_later_event_opens_another(site):
    site.send(pv("a", 0), pv("a", 10, "/x"), ("app.session.end", "a", 11, {}))
    assert site.later(1) == 1
    assert site.value("app_session_duration_seconds_sum") == 10  # the end marker is no activity
    site.send(("session.end", "a", 12, {}))  # an end for a closed visit opens nothing
    site.send(("session.start", "b", 12, {}))  # nor does the conventions' start marker
    assert site.app.sessions.store.open_sessions() == 0
    site.send(pv("a", 20, "/again"))
    assert site.later(3600) == 1
    assert site.value("app_sessions_closed_total") == 2
    assert site.samples("kpi_exporter_sessions_closed")[
        ("kpi_exporter_sessions_closed_total", frozenset({("reason", "end")}))] == 1


def test_conversions_and_dimensions_of_the_earliest_activity(site):
    site.send(pv("a", 5, "/p", **{"user_agent.original": IPHONE}))
    site.send(pv("a", 0, "/landing", **{"user_agent.original": CHROME,
                                        "app.referrer": "https://news.ycombinator.com/",
                                        "geo.country_iso_code": "fr"}),
              ("app.conversion", "a", 30, {"app.conversion.type": "purchase"}))
    site.later(3600)
    assert site.value("app_sessions_converted_total", source="Hacker News", device="desktop",
                      country="FR") == 1
    assert site.value("app_sessions_closed_total", source="Hacker News") == 1


def test_visits_started_by_source_and_client_and_campaign_label(tmp_path):
    site = Site(tmp_path, "web_analytics: {campaign_label: true}\n")
    site.send(pv("a", 0, **{"url.query": "utm_source=newsletter&utm_medium=email&"
                                         "utm_campaign=spring", "user_agent.original": IPHONE}),
              pv("b", 0, **{"app.referrer": "https://www.google.de/"}))
    got = site.samples("app_sessions_started")
    assert got == {
        ("app_sessions_started_total", frozenset({("service_name", SVC), ("source", "newsletter"),
                                                  ("medium", "email"), ("campaign", "spring")})): 1,
        ("app_sessions_started_total", frozenset({("service_name", SVC), ("source", "Google"),
                                                  ("medium", "search"),
                                                  ("campaign", "(none)")})): 1,
        ("app_sessions_started_by_client_total", frozenset({
            ("service_name", SVC), ("device", "mobile"), ("browser", "Safari"),
            ("os", "iOS")})): 1,
        ("app_sessions_started_by_client_total", frozenset({
            ("service_name", SVC), ("device", "unknown"), ("browser", "unknown"),
            ("os", "unknown")})): 1,
    }


def test_bots_are_no_visitors_and_are_counted_apart(site):
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    site.send(pv("crawl", 0, **{"user_agent.original": bot, "user.id": "u-bot"}),
              pv("human", 0, **{"user_agent.original": CHROME, "user.id": "u-human"}))
    site.later(3600)
    assert site.value("app_sessions_closed_total") == 1
    assert site.value("app_bot_events_total", bot="Googlebot") == 1
    assert site.value("app_page_views_total") == 1  # the bot's page view is left out
    windows = {k: v for k, v in site.samples("app_active_users").items()}
    assert windows[("app_active_users", frozenset({("window", "1d")}))] == 1


def test_bots_may_be_counted_as_visitors(tmp_path):
    site = Site(tmp_path, "web_analytics: {bots: include}\n")
    site.send(pv("crawl", 0, **{"user_agent.original": "curl/8.5.0"}))
    site.later(3600)
    assert site.value("app_sessions_closed_total", device="bot") == 1


def test_the_oldest_visits_close_early_at_the_cap_and_are_counted(tmp_path):
    site = Site(tmp_path, "windows: {max_open_sessions: 100}\n")
    for i in range(150):
        site.send(pv(f"s{i}", i))
        site.clock.t += 1
    assert site.app.sessions.store.open_sessions() == 100
    got = site.samples("kpi_exporter_sessions_closed")
    assert got[("kpi_exporter_sessions_closed_total", frozenset({("reason", "evicted")}))] == 50
    assert site.value("app_sessions_closed_total") == 50
    # the least recently active went first: s0..s49
    site.send(pv("s50", 500))
    site.later(30 * 60 - 1)
    assert site.value("app_sessions_closed_total") == 50 + 99  # all but s50, refreshed last
    site.later(1000)
    assert site.value("app_sessions_closed_total") == 150
    assert site.value("app_session_page_views_sum") == 151


def test_label_values_past_the_caps_become_other(tmp_path):
    site = Site(tmp_path, "web_analytics: {max_values: 3, max_routes: 2}\n")
    site.send(*(pv(f"s{i}", 0, f"/r{i}", **{"app.referrer": f"https://site{i}.example.org/"})
                for i in range(5)))
    site.later(3600)
    assert site.value("app_sessions_closed_total", source="(other)") == 2
    assert site.value("app_session_entries_total", route="(other)") == 3
    capped = site.samples("kpi_exporter_visit_values_capped")
    assert capped[("kpi_exporter_visit_values_capped_total",
                   frozenset({("dimension", "source")}))] == 2
    assert capped[("kpi_exporter_visit_values_capped_total",
                   frozenset({("dimension", "route")}))] == 3


def test_the_enricher_writes_derived_attributes_for_rules_and_breakdowns(tmp_path):
    site = Site(tmp_path, """
windows:
  breakdowns:
    - {attribute: app.acquisition.source, label: source, windows: [1h]}
    - {attribute: user_agent.name, label: browser, windows: [1h]}
rules:
  - metric: app_landings_total
    type: counter
    match: {signal: log, name: app.page_view}
    labels:
      medium: {attribute: app.acquisition.medium, default: none}
      os: {attribute: user_agent.os.name, default: unknown}
      country: {attribute: geo.country.iso_code, default: unknown}
""")
    seen: list[Record] = []
    site.app.pipeline.add_observer(lambda b: seen.extend(b.records))
    site.send(pv("a", 0, **{"user_agent.original": IPHONE,
                            "http.request.header.referer": ["https://duckduckgo.com/"],
                            "geo.country.iso_code": "de"}),
              pv("b", 0, **{"app.acquisition.source": "Partner", "user_agent.name": "MyApp",
                            "geo.country.iso_code": "Germany"}),
              ("app.feature_used", "a", 1, {}))
    a, b, feature = (r.attributes for r in seen)
    assert {k: a[k] for k in ("app.acquisition.source", "app.acquisition.medium",
                              "app.acquisition.campaign", "app.device.class",
                              "user_agent.name", "user_agent.os.name",
                              "geo.country.iso_code")} == {
        "app.acquisition.source": "DuckDuckGo", "app.acquisition.medium": "search",
        "app.acquisition.campaign": "(none)", "app.device.class": "mobile",
        "user_agent.name": "Safari", "user_agent.os.name": "iOS",
        "geo.country.iso_code": "DE"}
    # what the sender set is kept; a country that is no ISO code is dropped
    assert b["app.acquisition.source"] == "Partner" and b["user_agent.name"] == "MyApp"
    assert "geo.country.iso_code" not in b
    # an event that is no page view and carries no referrer gets no source
    assert "app.acquisition.source" not in feature
    got = site.samples("app_landings")
    assert got[("app_landings_total", frozenset({("medium", "search"), ("os", "iOS"),
                                                 ("country", "DE")}))] == 1
    # visits by source and browser, from the window breakdowns
    visits = site.samples("app_sessions_by")
    assert visits[("app_sessions_by_source", frozenset({("window", "1h"),
                                                        ("source", "DuckDuckGo")}))] == 1
    assert visits[("app_sessions_by_browser", frozenset({("window", "1h"),
                                                         ("browser", "Safari")}))] == 1


def test_web_analytics_can_be_turned_off(tmp_path):
    site = Site(tmp_path, "web_analytics: {enabled: false}\n")
    assert site.app.sessions is None and site.app.enricher is None
    site.send(pv("a", 0, **{"user_agent.original": "curl/8.5.0"}))
    assert site.samples("app_sessions_") == {} and site.samples("app_session_") == {}
    assert site.value("app_page_views_total") == 1  # no device class: a page view like any
    assert site.value("app_sessions", window="1h") == 1  # and the bot counts as a session


def test_open_visits_survive_a_restart_in_the_snapshot_without_their_ids(tmp_path):
    clock = Clock()
    site = Site(tmp_path, clock=clock)
    site.app.start()
    site.send(pv("secret-session-id", 0, "/in"), ("app.feature_used", "secret-session-id", 9, {}))
    site.app.stop()
    raw = gzip.decompress((tmp_path / "data" / STATE_FILE).read_bytes())
    assert b"secret-session-id" not in raw
    doc = json.loads(raw)
    assert doc["sessions"]["routes"] == ["(other)", "/in"]

    again = Site(tmp_path, clock=clock)
    assert again.app.sessions.store.open_sessions() == 1
    again.send(pv("secret-session-id", 20, "/out"))
    assert again.later(3600) == 1
    assert again.value("app_sessions_closed_total") == 1
    assert again.value("app_sessions_bounced_total") == 0
    assert again.value("app_session_duration_seconds_sum") == 20
    assert again.value("app_session_entries_total", route="/in") == 1
    assert again.value("app_session_exits_total", route="/out") == 1
    # the visit was counted as started once, before the restart
    assert again.value("app_sessions_started_total") == 1


def test_after_a_crash_past_the_last_save_open_visits_are_not_restored_to_end_twice(tmp_path):
    clock = Clock()
    site = Site(tmp_path, clock=clock)
    site.send(pv("a", 0, "/in"))
    assert site.app.state is not None and site.app.state.save()  # a periodic save: a open
    assert site.later(3600) == 1  # a ends and is counted (and scraped) after the save...
    assert site.value("app_sessions_closed_total") == 1
    site.app.state.close()  # ...then the process is killed: no final save

    again = Site(tmp_path, clock=clock)
    assert again.app.sessions.store.open_sessions() == 0  # a would end, and count, again
    assert again.later(3600) == 0
    assert again.value("app_sessions_closed_total") == 0  # from zero: a reset, nothing twice


def test_an_open_visit_takes_64_bytes_of_record_and_32_of_key():
    assert RECORD.size == 31
    assert sys.getsizeof(bytes(31)) <= 64
    assert sys.getsizeof((1 << 60) - 1) == 32


@pytest.mark.parametrize("text, problem", [
    ("windows: {session_timeout: 0s}", "session_timeout: a visit ends after between 1s"),
    ("windows: {session_timeout: soon}", "session_timeout: 'soon' is not a duration"),
    ("windows: {max_open_sessions: 10}", "windows.max_open_sessions: expected an integer from "
                                         "100 to 100000000 (visits open at once"),
    ("windows: {max_open_sessions: true}", "windows.max_open_sessions: expected an integer"),
    ("web_analytics: {enabled: yes please}", "enabled: expected true or false"),
    ("web_analytics: {session_labels: [source, planet]}",
     "session_labels: 'planet' is not a visit"),
    ("web_analytics: {session_labels: [source, source]}", "session_labels: a dimension is listed"),
    ("web_analytics: {page_view_events: []}", "page_view_events: name at least one event"),
    ("web_analytics: {page_view_events: [app.x], session_end_events: [app.x]}",
     "'app.x' is both a page view and a session end event"),
    ("web_analytics: {bots: maybe}", "bots: expected 'exclude'"),
    ("web_analytics: {max_values: 1}", "web_analytics.max_values: expected an integer from 2 "
                                       "to 5000 (the distinct values"),
    ("web_analytics: {max_routes: 1000000}", "web_analytics.max_routes: expected an integer "
                                             "from 2 to 60000 (the distinct entry"),
    ("web_analytics: {internal_hosts: ['https://x.example/']}",
     "internal_hosts: 'https://x.example/'"),
    ("web_analytics: {sources: {host: x}}", "sources: expected a list"),
    ("web_analytics: {sources: [{host: x.example, utm_source: x, source: X}]}",
     "give either host"),
    ("web_analytics: {sources: [{source: X}]}", "give either host"),
    ("web_analytics: {sources: [{host: 'a b', source: X}]}", "host: expected a host"),
    ("web_analytics: {sources: [{host: x.example, source: ''}]}", "source: expected"),
    ("web_analytics: {sources: [{host: x.example, source: X, medium: Paid Social}]}",
     "medium: expected a lower-case word"),
    ("web_analytics: {sources: [{host: x.example, source: X, channel: y}]}",
     "unknown key 'channel'"),
    ("web_analytics: {sessions: true}", "unknown key 'sessions'"),
    ("rules:\n  - {metric: app_sessions_closed_total, type: counter, match: {signal: log}}",
     "'app_sessions_closed_total' is a visit metric"),
])
def test_config_problems_name_the_key_and_what_to_do(tmp_path, text, problem):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_web_settings_are_restart_only(tmp_path):
    site = Site(tmp_path)
    path = tmp_path / "reload.yaml"
    path.write_text("windows: {session_timeout: 30m}\nweb_analytics: {bots: include}\n")
    site.app.config_path = str(path)
    ok, message = site.app.reload()
    assert ok and "restart to apply: web_analytics" in message
