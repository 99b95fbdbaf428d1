"""``kpi-exporter demo`` against a running exporter: what its summary claims is what /metrics
shows."""

from __future__ import annotations

import io
import json
import re
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from exporter import sdk
from exporter.demo import ACTIONS, CATEGORIES, DemoOptions, run_demo
from exporter.demohistory import HistoryOptions, write_history
from exporter.records import Record
from tests.helpers import ROOT, InProcessExporter, Scrape, free_port
from tests.rule_eval import evaluate, sample

# the counters (and histogram counts) the demo's summary speaks for
SUMMARY_METRICS = {
    "app_events_total", "app_page_views_total", "app_feature_usage_total",
    "app_conversions_total", "app_conversion_value_total", "ai_recommendations_total",
    "ai_recommendation_responses_total", "gen_ai_evaluation_results_total",
    "gen_ai_span_operation_duration_seconds_count", "gen_ai_span_token_usage_sum",
    "gen_ai_span_finish_reasons_total", "gen_ai_span_cost_usd_total",
    "gen_ai_client_operation_duration_seconds_count", "gen_ai_client_token_usage_sum",
    "gen_ai_client_cost_usd_total",
    "app_sessions_started_total", "app_sessions_started_by_client_total",
}


def run_cli(*args: str, stderr: Any = subprocess.PIPE, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "exporter", "demo", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout)


def scraped_counters(s: Scrape) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {k: v for k, v in s.samples.items() if k[0] in SUMMARY_METRICS}


def claimed_counters(summary: dict[str, Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(x["metric"], frozenset(x["labels"].items())): x["value"] for x in summary["samples"]}


def test_demo_summary_matches_the_scraped_counters_exactly(exporter, tmp_path):
    out = tmp_path / "summary.json"
    r = run_cli("--endpoint", exporter.otlp_url, "--rate", "250", "--duration", "3s",
                "--users", "40", "--seed", "11", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(out.read_text())
    assert summary["delivered_all"] is True and summary["metric_exports_failed"] == 0
    calls = {m: f["calls"] for m, f in summary["genai"].items()}
    assert summary["events"] + sum(calls.values()) == 750
    assert summary["spans"] < sum(calls.values())  # gpt-4o-mini's spans are a sample
    assert "the exporter accepted all of them" in r.stdout
    # a non-terminal stderr gets no progress bar
    assert "item/s" not in r.stderr and "%|" not in r.stderr

    claimed = claimed_counters(summary)
    scrape = exporter.scrape()
    scraped = scraped_counters(scrape)
    assert set(claimed) == set(scraped)
    for key, value in claimed.items():
        assert scraped[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    # the traffic is the one the demo promises, not a token sample
    kinds = {dict(k[1])["event"] for k in claimed if k[0] == "app_events_total"}
    assert kinds == {"app.page_view", "app.feature_used", "app.conversion",
                     "ai.recommendation.generated", "ai.recommendation.response",
                     "ai.model.performance", "gen_ai.evaluation.result"}
    features = {(dict(k[1])["feature"], dict(k[1])["action"]) for k in claimed
                if k[0] == "app_feature_usage_total"}
    assert {f for f, _ in features} == set(CATEGORIES)
    assert {a for _, a in features} == set(ACTIONS)
    assert summary["spans"] > 0 and summary["sessions"] > 0
    assert 0 < summary["users"] <= 40
    # the KPI windows count the same users and sessions (HyperLogLog: an estimate)
    s = exporter.scrape()
    for window in ("5m", "1h", "1d", "7d", "30d"):
        assert s.value("app_active_users", window=window) == pytest.approx(summary["users"],
                                                                           rel=0.02)
        assert s.value("app_sessions", window=window) == pytest.approx(summary["sessions"],
                                                                       rel=0.02)
        assert s.value("app_conversion_rate_ratio", window=window) == pytest.approx(
            summary["conversion_rate"], rel=0.05)
    # every line of the human summary's totals is a number /metrics confirms
    total_events = sum(v for (m, _), v in claimed.items() if m == "app_events_total")
    assert f"{int(total_events):>10}  app_events_total" in r.stdout
    # and the GenAI figures it prints are what the recording rules make of the traffic
    genai = summary["genai"]
    assert {f["source"] for f in genai.values()} == {"metric points", "spans"}
    assert genai["claude-3-5-haiku"]["cached_tokens"] > 0
    for model, f in genai.items():
        assert f"{f['calls']:>8} {f['failed']:>7} {f['input_tokens']:>10}" in r.stdout
    evaluate(scrape, [
        {"expr": "round(job_model:gen_ai_client_operations:rate5m * 3600)",
         "exp_samples": [sample(f["calls"], model=m) for m, f in genai.items()]},
        {"expr": "round(job_model_type:gen_ai_client_token_usage:rate5m * 3600)",
         "exp_samples": [sample(f[f"{t}_tokens"], model=m, gen_ai_token_type=t)
                         for m, f in genai.items() for t in ("input", "output")]},
        *[{"expr": f'round(job_model:gen_ai_cost_usd:increase1h{{model="{m}"}} / '
                   f'{f["cost_usd"]!r} * 1e6)', "exp_samples": [sample(1e6, model=m)]}
          for m, f in genai.items()],
    ], tmp_path)


def test_demo_backfill_spreads_event_times_over_the_past_week(exporter, tmp_path):
    records: list[Record] = []
    lock = threading.Lock()

    def observe(batch: Any) -> None:
        with lock:
            records.extend(batch.records)

    exporter.pipeline.add_observer(observe)
    out = tmp_path / "summary.json"
    before = time.time()
    r = run_cli("--endpoint", exporter.otlp_url, "--rate", "400", "--duration", "2s",
                "--seed", "5", "--backfill", "7d", "--json", str(out))
    after = time.time()
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(out.read_text())
    calls = sum(f["calls"] for f in summary["genai"].values())
    assert summary["events"] + calls == 800
    records = [r for r in records if r.signal != "metric"]  # points are stamped now
    assert len(records) == summary["events"] + summary["spans"]
    times = sorted(rec.time_ns / 1e9 for rec in records)
    week = 7 * 86400
    assert times[0] >= before - week - 1 and times[-1] <= after
    assert times[0] < after - 5 * 86400  # reaches back most of the week
    days = {min(6, int((after - t) // 86400)) for t in times}
    assert days == set(range(7))  # every day of the week has traffic
    first, last = summary["event_time_range"]
    assert first == pytest.approx(times[0], abs=1e-3) and last <= after
    # the windows go by event time: the week holds every session, the last day a part
    scrape = exporter.scrape()
    week_sessions = scrape.value("app_sessions", window="7d")
    day_sessions = scrape.value("app_sessions", window="1d")
    assert week_sessions == pytest.approx(summary["sessions"], rel=0.05)
    assert day_sessions is not None and 0 < day_sessions < week_sessions / 2


def test_demo_is_reproducible_for_a_seed(exporter_factory):
    def once() -> list[dict[str, Any]]:
        e: InProcessExporter = exporter_factory()
        summary = run_demo(DemoOptions(endpoint=e.otlp_url, rate=2000, duration=0.3, users=25,
                                       seed=42), progress=False)
        assert summary.delivered_all
        return summary.samples()

    first, second = once(), once()
    assert first == second
    assert len(first) > 20


def test_demo_draws_a_progress_bar_when_stderr_is_a_terminal(exporter):
    master, slave = pty.openpty()
    try:
        r = run_cli("--endpoint", exporter.otlp_url, "--rate", "200", "--duration", "1s",
                    "--seed", "1", stderr=slave)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal's other side is closed: all read
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    drawn = b"".join(chunks).decode(errors="replace")
    assert r.returncode == 0, r.stdout
    assert "demo: 100%" in drawn and "200/200" in drawn
    assert "%|" not in r.stdout  # the bar stays off standard output


def test_demo_refuses_to_start_without_an_exporter():
    port = free_port()
    r = run_cli("--endpoint", f"http://127.0.0.1:{port}", "--duration", "1s")
    assert r.returncode == 1
    assert f"no exporter at http://127.0.0.1:{port}" in r.stderr
    assert "kpi-exporter serve" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--duration", "soon"], "'soon' is not a duration"),
    (["--backfill", "7x"], "'7x' is not a duration"),
    (["--rate", "0"], "must be positive"),
])
def test_demo_rejects_bad_options(args: list[str], message: str):
    r = run_cli(*args)
    assert r.returncode == 2 and message in r.stderr


def test_demo_reports_what_did_not_arrive(exporter_factory, tmp_path: Path):
    guarded = exporter_factory("server:\n  auth:\n    bearer_tokens: [right]\n")
    client = sdk.Analytics(guarded.otlp_url, "kpi-demo", headers={"Authorization": "Bearer wrong"},
                           schedule_delay_millis=50, close_at_exit=False)
    summary = run_demo(DemoOptions(endpoint=guarded.otlp_url, rate=1000, duration=0.1, seed=2),
                       progress=False, client=client)
    client.shutdown(1)
    assert not summary.delivered_all
    text = summary.render()
    assert "NOT all delivered: 0/" in text and "refused" in text


def test_demo_with_the_sdk_disabled_refuses_to_start(exporter):
    # The README's live run lasts ten minutes: with the SDK off it would send nothing for all
    # of them, so the demo says why at once instead of running.
    r = subprocess.run([sys.executable, "-m", "exporter", "demo", "--endpoint", exporter.otlp_url,
                        "--rate", "200", "--duration", "10m", "--seed", "3"], cwd=ROOT,
                       env={**os.environ, "OTEL_SDK_DISABLED": "true",
                            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "OTEL_SDK_DISABLED=true" in r.stderr and "unset OTEL_SDK_DISABLED" in r.stderr
    assert r.stdout == ""  # no summary claiming events were sent
    assert exporter.scrape().value("kpi_exporter_records_received_total", signal="log") is None


def test_demo_summary_with_the_sdk_disabled_claims_nothing_sent(exporter, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    client = sdk.Analytics(exporter.otlp_url, "kpi-demo", schedule_delay_millis=50,
                           close_at_exit=False)
    summary = run_demo(DemoOptions(endpoint=exporter.otlp_url, rate=200, duration=0.2, seed=3),
                       progress=False, client=client)
    client.shutdown(1)
    assert summary.events > 0 and not summary.delivered_all
    text = summary.render()
    first = text.splitlines()[0]
    assert first.startswith("kpi-exporter demo: sent nothing: generated"), first
    assert f"generated {summary.events} events" in first
    assert "NOTHING was sent: OTEL_SDK_DISABLED=true" in text and "accepted all" not in text
    assert exporter.scrape().value("kpi_exporter_records_received_total", signal="log") is None


def test_demo_openmetrics_history_is_reproducible_and_consistent(tmp_path):
    path = tmp_path / "history.om"
    r = run_cli("--openmetrics", str(path), "--backfill", "2d", "--users", "50", "--seed", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"series to {path}" in r.stdout and "seed 5" in r.stdout
    text = path.read_text()
    again = [io.StringIO(), io.StringIO()]
    for out in again:
        write_history(HistoryOptions(backfill=2 * 86400, users=50, seed=5, end=1.8e9), out)
    assert again[0].getvalue() == again[1].getvalue()
    users: dict[int, dict[str, float]] = {}
    for m in re.finditer(r'^app_active_users\{[^}]*window="(\w+)"\} (\S+) (\d+)$', text, re.M):
        users.setdefault(int(m.group(3)), {})[m.group(1)] = float(m.group(2))
    assert len(users) == 2 * 288 + 1  # every 5 minutes over 2 days, both ends included
    for t, by_window in users.items():
        w = [by_window[k] for k in ("5m", "1h", "1d", "7d", "30d")]
        assert w == sorted(w) and w[-1] <= 50, (t, by_window)
    assert max(v["1d"] for v in users.values()) > 10
    counter = [float(v) for v in re.findall(
        r'^app_events_total\{[^}]*event="app.page_view"[^}]*\} (\S+) \d+$', text, re.M)]
    assert counter == sorted(counter) and counter[-1] > 0
    assert text.endswith("# EOF\n")


def test_demo_openmetrics_refuses_a_short_backfill(tmp_path):
    r = run_cli("--openmetrics", str(tmp_path / "x.om"), "--backfill", "10m")
    assert r.returncode == 2 and "at least 1h" in r.stderr


def test_demo_visits_close_with_the_figures_its_summary_prints(exporter_factory):
    from exporter.demo import CLIENTS, LANDINGS
    from tests.helpers import eventually

    e: InProcessExporter = exporter_factory("windows: {session_timeout: 2s}\n")
    summary = run_demo(DemoOptions(endpoint=e.otlp_url, rate=1500, duration=2, users=60,
                                   seed=8), progress=False)
    assert summary.delivered_all
    figures = summary.visit_figures()
    assert figures["visits"] == summary.sessions > 30
    assert 0 < figures["bounces"] < figures["visits"]

    def closed() -> Scrape | None:
        # a visit leaves the open ones a moment before it is counted, so a scrape may see it
        # in neither: wait for the count, then check that it stays
        s = e.scrape()
        return s if (s.value("kpi_exporter_open_sessions") == 0 and
                     sum(s.matching("app_sessions_closed_total").values()) >=
                     figures["visits"]) else None
    assert eventually(closed, timeout=20), e.scrape().text[-2000:]
    time.sleep(1)  # a few ticks of the closing timer (0.2 s with this timeout)
    s = e.scrape()
    assert s.value("kpi_exporter_open_sessions") == 0

    def total(name: str) -> float:
        return sum(s.matching(name).values())
    assert total("app_sessions_closed_total") == figures["visits"]
    assert total("app_sessions_bounced_total") == figures["bounces"]
    assert total("app_session_page_views_sum") == figures["page_views"]
    # every source, device class and country of the demo's mix shows up
    sources = {dict(k)["source"] for k in s.matching("app_sessions_closed_total")}
    assert sources == {x[2] for x in LANDINGS}
    devices = {dict(k)["device"] for k in s.matching("app_sessions_started_by_client_total")}
    assert devices == {x[1] for x in CLIENTS}
    assert "bounce rate" in summary.render() and "views per visit" in summary.render()
