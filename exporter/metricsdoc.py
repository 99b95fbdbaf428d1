"""docs/metrics.md: the reference of every metric the exporter serves, generated from the code.

    python -m exporter.metricsdoc            # write docs/metrics.md (part of `make generate`)
    python -m exporter.metricsdoc --check    # exit 1 when docs/metrics.md is out of date

The page cannot drift from the code: the exporter's own metrics, the KPI window gauges and
the process metrics are read from the registry of a real exporter (built by
:func:`exporter.app.build`, with a throw-away state directory and one example breakdown) after
a few requests went through its real OTLP receiver, so every labelled family has samples to
read the label names from; the mapped metrics are read from the compiled built-in rules.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from prometheus_client.core import Metric

from exporter.app import App, build
from exporter.config import load_config
from exporter.naming import OVERFLOW_LABEL
from exporter.receiver import create_receiver
from exporter.rules import HISTOGRAM, LabelSpec, Rule
from exporter.collectors.sessions import SessionsCollector
from exporter.collectors.windows import WindowsCollector
from exporter.sessions.metrics import VisitMetrics
from exporter.sessions.observer import SessionObserver
from exporter.sessions.redis import RedisSessionStore
from exporter.sessions.tracker import SessionTracker
from exporter.windows.config import WINDOW_METRICS
from exporter.windows.redis import RedisWindowStore

__all__ = ["render", "main", "DOC_PATH"]

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"

# The example breakdown the page shows the naming of; written as <label> and <attribute>.
_BREAKDOWN_ATTRIBUTE = "app.platform"
_BREAKDOWN_LABEL = "platform"
_CONFIG = f"""
windows:
  breakdowns:
    - attribute: {_BREAKDOWN_ATTRIBUTE}
      label: {_BREAKDOWN_LABEL}
"""


@dataclass(frozen=True)
class Row:
    """One metric as the page lists it."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _logs(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [_attr("service.name", "metricsdoc")]},
        "scopeLogs": [{"logRecords": records}]}]}).encode()


def _event(name: str, when_ns: int, **attributes: Any) -> dict[str, Any]:
    return {"eventName": name, "timeUnixNano": str(when_ns),
            "attributes": [_attr(k, v) for k, v in attributes.items()]}


def _exercise(app: App) -> None:
    """Sends a few requests through the real receiver so every labelled family has samples:
    used, rejected and unmatched records, an event too old and one too far ahead for the
    windows, a GenAI span, a cumulative GenAI histogram point (a stream to remember), a
    malformed body, then a state save."""
    now = time.time_ns()
    day = 86_400 * 10**9
    who = {"user.id": "u-1", "session.id": "s-1", _BREAKDOWN_ATTRIBUTE: "ios"}
    client = create_receiver(app.pipeline).test_client()
    answers = [
        client.post("/v1/logs", content_type="application/json", data=_logs([
            _event("app.page_view", now, **{"url.path": "/home"}, **who),
            _event("app.conversion", now, **{"app.conversion.type": "purchase"}, **who),
            _event("ai.model.performance", now, **{"gen_ai.request.model": "m",
                                                   "ai.model.accuracy": "high"}),
            _event("app.page_view", now - 400 * day, **who),
            _event("app.page_view", now + day, **who),
            {"timeUnixNano": str(now), "attributes": [_attr("note", "no event name")]},
        ])),
        client.post("/v1/traces", content_type="application/json", data=json.dumps(
            {"resourceSpans": [{"scopeSpans": [{"spans": [{
                "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
                "name": "chat m", "kind": 3, "startTimeUnixNano": str(now - 10**9),
                "endTimeUnixNano": str(now),
                "attributes": [_attr("gen_ai.operation.name", "chat"),
                               _attr("gen_ai.provider.name", "openai"),
                               _attr("gen_ai.request.model", "m"),
                               _attr("gen_ai.usage.input_tokens", 10)]}]}]}]}).encode()),
        client.post("/v1/metrics", content_type="application/json", data=json.dumps(
            {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
                "name": "gen_ai.client.operation.duration", "histogram": {
                    "aggregationTemporality": 2, "dataPoints": [{
                        "startTimeUnixNano": str(now - 10**9), "timeUnixNano": str(now),
                        "count": "1", "sum": 0.5,
                        "explicitBounds": [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28,
                                           2.56, 5.12, 10.24, 20.48, 40.96, 81.92],
                        "bucketCounts": ["0"] * 6 + ["1"] + ["0"] * 8,
                        "attributes": [_attr("gen_ai.operation.name", "chat"),
                                       _attr("gen_ai.request.model", "m")]}]}}]}]}]}
        ).encode()),
        client.post("/v1/metrics", content_type="application/json", data=b"{not json"),
    ]
    codes = [a.status_code for a in answers]
    if codes != [200, 200, 200, 400]:
        raise RuntimeError(f"the example requests were answered {codes}, not "
                           f"[200, 200, 200, 400]")
    if app.state is not None:
        app.state.save()


def _labels(family: Metric) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for s in family.samples:
        for name in s.labels:
            if name not in ("le", OVERFLOW_LABEL):
                seen.setdefault(name)
    return tuple(seen)


def _served_name(family: Metric) -> str:
    if family.type == "counter":
        return family.name + "_total"
    if family.type == "info":
        return family.name + "_info"
    return family.name


def _rows(families: Iterable[Metric], mapped: set[str]) -> list[Row]:
    rows = []
    for f in families:
        name = _served_name(f)
        if name in mapped:
            continue
        labelled = any(s.labels for s in f.samples)
        if not f.samples:
            raise RuntimeError(f"{name} served no sample after the example requests, so its "
                               f"labels cannot be read: initialise its label values where it is "
                               f"created, or extend _exercise() in exporter/metricsdoc.py")
        rows.append(Row(name, f.type, _labels(f) if labelled else (), f.documentation))
    return rows


def _generic(row: Row) -> Row:
    """A breakdown family of the example, in terms of <label> and <attribute>."""
    return Row(row.name.replace(f"_by_{_BREAKDOWN_LABEL}", "_by_<label>"), row.type,
               tuple("<label>" if n == _BREAKDOWN_LABEL else n for n in row.labels),
               row.help.replace(_BREAKDOWN_ATTRIBUTE, "`<attribute>`"))


def _code(items: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in items) or "none"


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _table(rows: list[Row]) -> str:
    out = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    out += [f"| `{r.name}` | {r.type} | {_code(r.labels)} | {_cell(r.help)} |" for r in rows]
    return "\n".join(out) + "\n"


def _fmt_bound(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else repr(b)


def _label_sources(spec: LabelSpec) -> list[str]:
    if spec.field:
        return [f"the record's {spec.field}"]
    if spec.constant is not None:
        return [f'"{spec.constant}"']
    return list(spec.attributes)


def _fed_by(rule: Rule) -> str:
    if rule.name_exact is not None:
        what = f"{rule.signal} `{rule.name_exact}`"
    elif rule.name_source:
        pattern = re.sub(r"^glob '(.*)'$", r"`\1`", rule.name_source)
        what = f"{rule.signal} named {pattern}"
    else:
        what = f"{rule.signal}s"
    conditions = [f"`{key}` {'set' if text == 'it to exist' else text}"
                  for key, text, _p in rule.conditions]
    if conditions:
        what += " with " + " and ".join(conditions)
    v = rule.value
    if v.kind == "constant":
        value = "counts 1" if v.constant == 1 else f"adds {v.constant:g}"
    elif v.kind == "attribute":
        value = f"`{v.attribute}`" + (f" x {v.scale:g}" if v.scale != 1 else "")
    elif v.kind == "cost":
        value = ("USD of the point's tokens" if v.part == "data_point"
                 else f"USD of its {v.part.replace('_', ' ')} usage")
    else:
        value = {"duration": "span duration", "data_point": "the data point"}.get(v.kind, v.kind)
        value += f" x {v.scale:g}" if v.scale != 1 else ""
    return f"{what}: {value}"


def _rule_table(rules: list[Rule]) -> str:
    by_metric: dict[str, list[Rule]] = {}
    for r in rules:
        by_metric.setdefault(r.metric.name, []).append(r)
    out = ["| metric | type | labels (from) | fed by | meaning |", "|---|---|---|---|---|"]
    for name, feeding in by_metric.items():
        d = feeding[0].metric
        sources: dict[str, dict[str, None]] = {n: {} for n in d.label_names}
        for r in feeding:
            for spec in r.labels:
                for source in _label_sources(spec):
                    sources.setdefault(spec.name, {}).setdefault(source)
        labels = [f"`{n}` ({' or '.join(src)})" if src else f"`{n}`"
                  for n, src in sources.items()]
        fed = "; ".join(dict.fromkeys(_fed_by(r) for r in feeding))
        meaning = _cell(d.help)
        if d.type == HISTOGRAM:
            meaning += f" Buckets: {', '.join(_fmt_bound(b) for b in d.buckets)}."
        out.append(f"| `{name}` | {d.type} | {', '.join(labels) or 'none'} | {fed} | {meaning} |")
    return "\n".join(out) + "\n"


def _visit_table(metrics: VisitMetrics) -> str:
    out = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for d in metrics.definitions.values():
        meaning = _cell(d.help)
        if d.type == HISTOGRAM:
            meaning += f" Buckets: {', '.join(_fmt_bound(b) for b in d.buckets)}."
        out.append(f"| `{d.name}` | {d.type} | {_code(d.label_names)} | {meaning} |")
    return "\n".join(out) + "\n"


def _shared_store_rows(config: Any, app: App) -> list[Row]:
    """The self-metrics only a shared window store serves, from the collectors of stores
    that are never opened (they connect to nothing and report themselves down)."""
    windows = dataclasses.replace(config.windows, store="redis://127.0.0.1:6379/0")
    store = RedisWindowStore(windows, "0" * 16)
    try:
        families = list(WindowsCollector(store).collect())
        sessions = RedisSessionStore(windows, store.client, windows.redis_prefix)
        observer = next(o for o in app.pipeline.observers if isinstance(o, SessionObserver))
        assert app.sessions is not None
        families += SessionsCollector(SessionTracker(sessions, app.sessions.metrics, 1800),
                                      observer, shared=True).collect()
    finally:
        store.close()
    return [dataclasses.replace(r, help=f"{r.help} Served with a shared window store "
                                        f"(`windows.store`) only.")
            for r in _rows(families, set())]


def render() -> str:
    """The text of docs/metrics.md, from a freshly built exporter."""
    with tempfile.TemporaryDirectory(prefix="kpi-metricsdoc-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(_CONFIG)
        overrides = {"state_dir": str(Path(tmp) / "data")}
        config = load_config(str(path), env={}, overrides=overrides)
        app = build(config, config_path=str(path), config_overrides=overrides)
        try:
            _exercise(app)
            families = list(app.registry.collect())
            assert app.sessions is not None
            visits = app.sessions.metrics
            shared_rows = _shared_store_rows(config, app)
        finally:
            app.stop()
    rules = config.rules
    mapped = {r.metric.name for r in rules} | set(visits.definitions)
    rows = _rows(families, mapped)
    window_names = set(WINDOW_METRICS)
    self_rows = [r for r in rows if r.name.startswith("kpi_exporter_")]
    window_rows = [r for r in rows if r.name in window_names]
    breakdown_rows = [_generic(r) for r in rows if f"_by_{_BREAKDOWN_LABEL}" in r.name]
    listed = {r.name for r in self_rows + window_rows} | {
        r.name for r in rows if f"_by_{_BREAKDOWN_LABEL}" in r.name}
    runtime_rows = [r for r in rows if r.name not in listed]
    served = {r.name for r in rows}
    self_rows += [r for r in shared_rows if r.name not in served]
    return "".join([
        "# Metrics\n\n",
        "<!-- Generated by `make generate` (python -m exporter.metricsdoc) from a running "
        "exporter and the built-in rules; do not edit. -->\n\n",
        "Every metric kpi-exporter serves on `/metrics`, with its type, labels and help text. "
        "Counters are listed under the name Prometheus stores (with `_total`); a histogram "
        "`h` is served as `h_bucket{le}`, `h_sum` and `h_count`. The exporter serves both "
        "the Prometheus text format and OpenMetrics (by the scrape's `Accept` header).\n\n",
        "- [The exporter's own metrics](#the-exporters-own-metrics)\n",
        "- [KPI windows](#kpi-windows)\n",
        "- [Visits](#visits)\n",
        "- [Mapped metrics of the built-in rules](#mapped-metrics-of-the-built-in-rules)\n",
        "- [Process and runtime](#process-and-runtime)\n\n",
        "## The exporter's own metrics\n\n",
        "`kpi_exporter_*`: what came in, what was used, what was lost and why. "
        "[troubleshooting.md](troubleshooting.md) says which to look at for which symptom; "
        "the *Exporter health* dashboard and the `KpiExporter*` alerts read them. Counters "
        "are per process: add replicas and processes up with `sum`.\n\n",
        _table(self_rows),
        "\n## KPI windows\n\n",
        "Distinct users and sessions and the conversion rate over sliding windows of event "
        "time, from HyperLogLog sketches ([kpis.md](kpis.md)). Gauges, one series per "
        "window (`window=\"5m\"`, `\"1h\"`, `\"1d\"`, `\"7d\"`, `\"30d\"` by default, "
        "`windows.durations`). Served only while `windows.enabled` is true and, with a shared "
        "window store, while it answers (`kpi_exporter_window_store_up`). With a shared "
        "store every replica serves the same global figure: aggregate with "
        "`max by (window)`, never `sum` ([scaling.md](scaling.md)).\n\n",
        _table(window_rows),
        "\nEach breakdown in `windows.breakdowns` (an `attribute` shown as `label`) adds three "
        "families named after its label; values past the breakdown's `max_values` go to one "
        f"series labelled `{OVERFLOW_LABEL}=\"true\"` instead of `<label>`:\n\n",
        _table(breakdown_rows),
        "\n## Visits\n\n",
        "Visits (sessions) that close, counted exactly: each visit once when it starts and "
        "once when it closes, by the process that opened or closed it, so replicas add up "
        "with `sum` ([kpis.md](kpis.md#visits) defines every figure). Served while "
        "`web_analytics.enabled` and `windows.enabled` are true. "
        "`app_sessions_started_total` has a `campaign` label with "
        "`web_analytics.campaign_label: true`; the closed-visit metrics are labelled by "
        "`service_name` and `web_analytics.session_labels` (default `source`, `device`, "
        "`country`). Each metric has the series cap of mapped metrics.\n\n",
        _visit_table(visits),
        "\n## Mapped metrics of the built-in rules\n\n",
        "What `exporter/defaults/rules.yaml` maps the event vocabulary ([events.md](events.md)) "
        "and the GenAI conventions ([ai.md](ai.md)) to. A series appears once a record feeds "
        "it. Each metric has a series cap (`limits.max_series_per_metric`); past it, updates "
        f"go to one series labelled `{OVERFLOW_LABEL}=\"true\"`. Your own rules add metrics "
        "of their own ([mapping.md](mapping.md)); a rule of yours with one of these names "
        "replaces the built-in rules for it. Counters and histograms fed by spans or by "
        "events with a trace context carry exemplars (`trace_id`, `span_id`) in the "
        "OpenMetrics format ([monitoring.md](monitoring.md#exemplars)).\n\n",
        _rule_table(rules),
        "\n## Process and runtime\n\n",
        "From prometheus_client's process, platform and garbage-collector collectors, as "
        "every Python exporter serves them (the process ones on Linux only).\n\n",
        _table(runtime_rows),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.metricsdoc",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the file is out of date")
    parser.add_argument("--out", type=Path, default=DOC_PATH,
                        help=f"file to write or check (default: {DOC_PATH.name} in docs/)")
    args = parser.parse_args(argv)
    text = render()
    current = args.out.read_text() if args.out.is_file() else None
    if args.check:
        if current != text:
            print(f"out of date: {args.out} (run `make generate`)", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
