"""Scrapes that give way to request threads: the exposition is unchanged, and the work pauses
after every slice of it (a clock the test moves by hand; nothing here measures time)."""

from __future__ import annotations

import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from exporter.pacing import Pacer, PacedRegistry


class Steps:
    """A clock that moves ``step`` seconds each time it is read; records the sleeps."""

    def __init__(self, step: float):
        self.t, self.step, self.slept = 0.0, step, []  # type: ignore[var-annotated]

    def __call__(self) -> float:
        self.t += self.step
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def registry_of(families: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    for i in range(families):
        Counter(f"c{i}", f"counter {i}", ["k"], registry=registry).labels(k="v").inc(i)
    Gauge("g", "a gauge", registry=registry).set(1.5)
    return registry


def test_the_paced_registry_exposes_the_same_text_and_openmetrics():
    registry = registry_of(40)
    paced = PacedRegistry(registry)
    assert generate_latest(paced) == generate_latest(registry)
    assert openmetrics_latest(paced) == openmetrics_latest(registry)
    names = ["c3_total", "g"]
    # the same families (prometheus_client's own restriction yields them in no set order)
    assert sorted(generate_latest(paced.restricted_registry(names)).splitlines()) == \
        sorted(generate_latest(registry.restricted_registry(names)).splitlines())
    assert b"c3_created" not in generate_latest(paced.restricted_registry(names))


def test_a_large_family_pauses_while_it_is_formatted():
    # one family of 4,000 series: prometheus_client formats it between two of the registry's
    # families, so it must pause within the family, not only after it
    registry = CollectorRegistry()
    gauge = Gauge("big", "one large family", ["k"], registry=registry)
    for i in range(4000):
        gauge.labels(k=str(i)).set(i)
    clock = Steps(0.0003)
    paced = PacedRegistry(registry, lambda: Pacer(work=0.001, pause=0.0002, clock=clock,
                                                  sleep=clock.sleep))
    for latest in (generate_latest, openmetrics_latest):
        clock.slept.clear()
        assert latest(paced) == latest(registry)
        # a look at the clock per 16 samples (0.3 ms each): a pause after every fourth
        # look, about 60 in all
        assert 55 <= len(clock.slept) <= 70


def test_work_pauses_after_every_slice_of_it():
    clock = Steps(0.0003)  # each family takes 0.3 ms (one clock reading each)
    pacer_of = lambda: Pacer(work=0.001, pause=0.0002, clock=clock, sleep=clock.sleep)  # noqa: E731
    generate_latest(PacedRegistry(registry_of(40), pacer_of))
    # 41 families at 0.3 ms: a pause after each ms of work, so about one per four families
    assert 8 <= len(clock.slept) <= 11
    assert set(clock.slept) == {0.0002}


def test_a_pacer_stops_pausing_when_its_budget_is_spent():
    # a very large page scraped under flat-out ingest would give way so often that it could
    # near the scrape timeout: past its budget a pacer lets the work finish at full speed
    clock = Steps(0.001)  # every look at the clock: 1 ms of work
    pacer = Pacer(work=0.0005, pause=0.0002, clock=clock, sleep=clock.sleep, budget=0.05)
    for _ in range(1000):
        pacer.pace()
    # two looks per paced step (before and after the sleep): 2 ms each, 25 steps in 50 ms
    assert 20 <= pacer.pauses <= 26
    assert len(clock.slept) == pacer.pauses
    paused = pacer.pauses
    for _ in range(1000):
        pacer.pace()
    assert pacer.pauses == paused


def test_quick_work_never_pauses():
    clock = Steps(0.0)
    pacer = Pacer(work=0.001, pause=0.0002, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        pacer.pace()
    assert (clock.slept, pacer.pauses) == ([], 0)


def test_the_running_exporter_serves_through_the_pacer(exporter_factory):
    # the metrics listener exposes the paced registry: the full page, and a scrape that
    # names the series it wants (name[]=), which served an empty page for every series of
    # the exporter's own collectors before (they describe no names to prometheus_client)
    e = exporter_factory()
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"eventName": "app.page_view", "attributes": [
            {"key": "user.id", "value": {"stringValue": f"u{i}"}},
            {"key": "url.path", "value": {"stringValue": "/"}}]} for i in range(5)]}]}]}
    assert requests.post(e.otlp_url + "/v1/logs", json=body, timeout=10).ok
    assert e.scrape().value("app_active_users", window="5m") == 5
    r = requests.get(e.metrics_url + "/metrics", params={"name[]": "app_active_users"},
                     timeout=10)
    families = {line.split()[2] for line in r.text.splitlines() if line.startswith("# TYPE")}
    assert families == {"app_active_users"}
