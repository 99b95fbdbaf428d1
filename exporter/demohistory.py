"""``kpi-exporter demo --openmetrics FILE``: weeks of Prometheus history for the demo, as
OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics FILE DIR``.

Prometheus builds history by scraping, so events sent with past event times (``demo
--backfill``) fill the exporter's windows but never the history that week-over-week panels
and alerts compare with (``offset 1w``). This module simulates the same population as the
live demo over the past and writes the series the exporter would have served every
:data:`STEP` seconds: the KPI window gauges (distinct users and sessions and the conversion
rate per window, counted exactly from the simulated sessions), the models' reported accuracy
and error rate, and the event counters. Series carry the ``job`` and ``instance`` labels of the
shipped ``prometheus.yml``, so they join the live series of the same exporter.
"""

from __future__ import annotations

import collections
import math
import random
import time
from dataclasses import dataclass, field
from typing import TextIO

from exporter.windows.config import DEFAULT_DURATIONS, parse_duration

__all__ = ["HistoryOptions", "HistorySummary", "write_history", "STEP"]

# Seconds between two samples of a series: within Prometheus's 5-minute lookback, so an
# instant query at any time (with or without offset 1w) finds a sample.
STEP = 300
# Sessions a user of the population starts per day on average (a heavy user more, the long
# tail fewer: the same weights as the live demo).
SESSIONS_PER_USER_PER_DAY = 1.5
CONVERSION_PROBABILITY = 0.08
# Growth of the traffic per week, so this week and last week differ as they would.
WEEKLY_GROWTH = 0.05
_MODELS = (("gpt-4o-mini", 0.90, 0.015), ("claude-3-5-haiku", 0.87, 0.02))
_OUTCOMES = (("accepted", 0.55), ("modified", 0.20), ("rejected", 0.25))
_REC_TYPES = (("workout_plan", 0.6), ("meal_plan", 0.4))
# Events per session of each kind, on average (page views and feature use dominate).
_EVENTS_PER_SESSION = (("app.page_view", 4.5), ("app.feature_used", 3.5),
                       ("ai.recommendation.generated", 0.6),
                       ("ai.recommendation.response", 0.5), ("gen_ai.evaluation.result", 0.2))


@dataclass
class HistoryOptions:
    """What to simulate: ``backfill`` seconds ending ``end`` (epoch seconds, default now)."""

    backfill: float
    users: int = 200
    seed: int | None = None
    service_name: str = "kpi-demo"
    job: str = "kpi-exporter"
    instance: str = "localhost:9464"
    end: float | None = None


@dataclass
class HistorySummary:
    """What was written."""

    path: str
    seed: int
    start: float
    end: float
    series: int
    samples: int
    last_values: dict[str, float] = field(default_factory=dict)

    def render(self) -> str:
        span = (self.end - self.start) / 86400
        lines = [
            f"kpi-exporter demo: wrote {self.samples} samples of {self.series} series to "
            f"{self.path}: {span:.1f} days of history, one sample every {STEP // 60} minutes, "
            f"ending {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.end))}, seed "
            f"{self.seed}",
            "  load it into Prometheus's storage before starting Prometheus on it:",
            f"    promtool tsdb create-blocks-from openmetrics {self.path} DIR",
            "    prometheus --config.file=prometheus/prometheus.yml --storage.tsdb.path=DIR",
        ]
        for name, value in self.last_values.items():
            lines.append(f"  {name} at the end: {value:g}")
        return "\n".join(lines)


def _diurnal(t: float) -> float:
    """Relative traffic at time ``t``: quiet at night, a peak in the evening, a weekend dip."""
    hour = (t % 86400) / 3600
    day = math.sin(math.pi * max(0.0, hour - 6) / 18) ** 2
    weekday = time.gmtime(t).tm_wday
    return (0.15 + 1.7 * day) * (0.75 if weekday >= 5 else 1.0)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


class _Window:
    """Distinct users, sessions and converting sessions over the last ``seconds``."""

    def __init__(self, seconds: float):
        self.steps = max(1, round(seconds / STEP))
        self.users: collections.Counter[int] = collections.Counter()
        self.buckets: collections.deque[tuple[list[int], int, int]] = collections.deque()
        self.sessions = 0
        self.converting = 0

    def add(self, users: list[int], converting: int) -> None:
        self.buckets.append((users, len(users), converting))
        self.users.update(users)
        self.sessions += len(users)
        self.converting += converting
        if len(self.buckets) > self.steps:
            old, n, conv = self.buckets.popleft()
            self.users.subtract(old)
            for u in old:
                if self.users[u] <= 0:
                    del self.users[u]
            self.sessions -= n
            self.converting -= conv


def write_history(options: HistoryOptions, out: TextIO, path: str = "") -> HistorySummary:
    """Simulates ``options.backfill`` seconds and writes them to ``out`` as OpenMetrics."""
    seed = options.seed if options.seed is not None else random.randrange(2 ** 31)
    rng = random.Random(seed)
    end = math.floor((options.end if options.end is not None else time.time()) / STEP) * STEP
    # from end - backfill to end, both included: a query of the first moment finds a sample
    steps = max(1, int(options.backfill // STEP)) + 1
    start = end - (steps - 1) * STEP
    base = {"job": options.job, "instance": options.instance}
    svc = {"service_name": options.service_name}
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(options.users)]
    windows = {w: _Window(parse_duration(w)) for w in DEFAULT_DURATIONS}

    gauges: dict[str, dict[str, list[tuple[int, float]]]] = {
        "app_active_users": {}, "app_sessions": {}, "app_conversion_rate_ratio": {},
        "ai_model_accuracy_ratio": {}, "ai_model_error_rate_ratio": {}}
    counters: dict[str, dict[str, list[tuple[int, float]]]] = {
        "app_events": {}, "app_conversions": {}, "ai_recommendations": {},
        "ai_recommendation_responses": {}}
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    drift = {model: 0.0 for model, _a, _e in _MODELS}

    def count(family: str, labels: str, n: float) -> None:
        totals[(family, labels)] += n

    for i in range(steps):
        t = start + i * STEP
        growth = (1 + WEEKLY_GROWTH) ** ((t - end) / 604800)
        mean_sessions = (options.users * SESSIONS_PER_USER_PER_DAY * STEP / 86400
                         * _diurnal(t) * growth)
        n = _poisson(rng, mean_sessions)
        users = rng.choices(range(options.users), weights=weights, k=n) if n else []
        # heavy users convert no more often than anyone: a session converts at a fixed rate
        converting = sum(1 for _ in range(n) if rng.random() < CONVERSION_PROBABILITY)
        for w in windows.values():
            w.add(users, converting)
        for name, w in windows.items():
            lab = _labels(**base, window=name)
            gauges["app_active_users"].setdefault(lab, []).append((t, len(w.users)))
            gauges["app_sessions"].setdefault(lab, []).append((t, w.sessions))
            rate = w.converting / w.sessions if w.sessions else 0.0
            gauges["app_conversion_rate_ratio"].setdefault(lab, []).append((t, round(rate, 6)))

        for event, per_session in _EVENTS_PER_SESSION:
            count("app_events", _labels(**base, event=event, **svc),
                  _poisson(rng, n * per_session))
        count("app_events", _labels(**base, event="app.conversion", **svc), converting)
        for _ in range(converting):
            kind = "subscribe" if rng.random() < 0.6 else "purchase"
            count("app_conversions", _labels(**base, type=kind, **svc), 1)
        reports = 0
        for model, accuracy, error_rate in _MODELS:
            recs = _poisson(rng, n * 0.6 * (0.65 if "mini" in model else 0.35))
            for rec_type, share in _REC_TYPES:
                count("ai_recommendations", _labels(**base, model=model, type=rec_type),
                      round(recs * share))
            responses = round(recs * 0.85)
            for outcome, share in _OUTCOMES:
                count("ai_recommendation_responses",
                      _labels(**base, model=model, outcome=outcome), round(responses * share))
            # the model reports its performance every few minutes; accuracy wanders slowly
            drift[model] = max(-0.05, min(0.05, drift[model] + rng.gauss(0, 0.002)))
            lab = _labels(**base, model=model)
            gauges["ai_model_accuracy_ratio"].setdefault(lab, []).append(
                (t, round(min(0.99, accuracy + drift[model] + rng.gauss(0, 0.005)), 4)))
            gauges["ai_model_error_rate_ratio"].setdefault(lab, []).append(
                (t, round(max(0.0, error_rate + rng.gauss(0, 0.003)), 4)))
            reports += STEP // 60
        count("app_events", _labels(**base, event="ai.model.performance", **svc), reports)
        for (family, lab), value in totals.items():
            counters[family].setdefault(lab, []).append((t, value))

    samples = series = 0
    for name, by_labels in gauges.items():
        out.write(f"# TYPE {name} gauge\n")
        for lab, points in by_labels.items():
            series += 1
            for t, v in points:
                out.write(f"{name}{lab} {v} {t}\n")
                samples += 1
    for name, by_labels in counters.items():
        out.write(f"# TYPE {name} counter\n")
        for lab, points in by_labels.items():
            series += 1
            for t, v in points:
                out.write(f"{name}_total{lab} {int(v)} {t}\n")
                samples += 1
    out.write("# EOF\n")
    last = {f'app_active_users{{window="{w}"}}': float(len(windows[w].users))
            for w in ("1d", "7d")}
    return HistorySummary(path, seed, start, end, series, samples, last)
