"""``kpi-exporter explain``: runs one record through the rules and says what it would do."""

from __future__ import annotations

import difflib
import json
from typing import Any

from exporter import otlp_json
from exporter.mapper import Mapping, Priced
from exporter.naming import is_identity_attribute
from exporter.records import LOG, METRIC, SPAN, TEMPORALITY_CUMULATIVE, Record
from exporter.rules import RecordError, label_str
from exporter.windows.config import WindowsConfig

__all__ = ["records_from_json", "explain"]

_SIGNAL_WORDS = {"log": LOG, "logs": LOG, "event": LOG, "span": SPAN, "trace": SPAN,
                 "metric": METRIC, "data_point": METRIC}


def records_from_json(doc: Any) -> list[Record]:
    """Records from any of: a full OTLP JSON export request (logs, traces or metrics), one OTLP
    JSON log record, span or metric, or the simple form
    ``{"signal": "log", "name": ..., "attributes": {...}, "value": ..., "duration": ...}``."""
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    raw = json.dumps(doc).encode()
    if "resourceLogs" in doc or "resource_logs" in doc:
        return otlp_json.decode_logs(raw).records
    if "resourceSpans" in doc or "resource_spans" in doc:
        return otlp_json.decode_traces(raw).records
    if "resourceMetrics" in doc or "resource_metrics" in doc:
        return otlp_json.decode_metrics(raw).records
    if isinstance(doc.get("attributes"), list):  # one OTLP JSON record
        if "startTimeUnixNano" in doc or "spanId" in doc:
            return otlp_json.decode_traces(json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [doc]}]}]}).encode()).records
        return otlp_json.decode_logs(json.dumps(
            {"resourceLogs": [{"scopeLogs": [{"logRecords": [doc]}]}]}).encode()).records
    if any(k in doc for k in ("gauge", "sum", "histogram")):
        return otlp_json.decode_metrics(json.dumps(
            {"resourceMetrics": [{"scopeMetrics": [{"metrics": [doc]}]}]}).encode()).records
    if "name" in doc:
        signal = _SIGNAL_WORDS.get(str(doc.get("signal", "log")).lower())
        if signal is None:
            raise ValueError(f"signal {doc.get('signal')!r} is not one of log, span, metric")
        attrs = doc.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise ValueError("'attributes' must be an object of attribute name to value")
        value = doc.get("value")
        return [Record(signal, str(doc["name"]), 0, dict(attrs),
                       value=float(value) if value is not None else None,
                       duration=float(doc["duration"]) if "duration" in doc else None,
                       status={"unset": 0, "ok": 1, "error": 2}.get(str(doc.get("status", "unset")), 0))]
    raise ValueError("not a record: give an OTLP JSON export request, one OTLP JSON log record, "
                     "span or metric, or {\"name\": ..., \"attributes\": {...}}")


def _shown(attrs: dict[str, Any], identities: frozenset[str]) -> dict[str, Any]:
    # explain output may be pasted into tickets: identities are never printed
    return {k: ("<redacted>" if k in identities or is_identity_attribute(k) else v)
            for k, v in attrs.items()}


def _redacted(text: str, attrs: dict[str, Any], identities: frozenset[str]) -> str:
    # a rule's condition on an identity quotes the value it saw
    for k, v in attrs.items():
        if (k in identities or is_identity_attribute(k)) and v not in (None, ""):
            text = text.replace(repr(v), "'<redacted>'")
    return text


def explain(mapping: Mapping, record: Record, windows: WindowsConfig | None = None
            ) -> list[str]:
    """Human-readable lines: the rules that matched, why others did not, the updates, and
    what the KPI windows do with the record (``windows``: their config, None when they are
    off). The windows' user and session attributes are printed as ``<redacted>`` like the
    built-in identity names."""
    identities = frozenset(windows.identity_keys if windows is not None else ())
    lines = [f"{record.signal} {record.name!r} with attributes "
             f"{_shown(record.attributes, identities)}"]
    rules = mapping.rules_for(record.signal, record.name)
    if not rules:
        same_signal = sorted({r.name_exact for r in mapping.rules
                              if r.signal == record.signal and r.name_exact})
        close = difflib.get_close_matches(record.name, same_signal, n=3)
        lines.append(f"  no rule matches {record.signal} records named {record.name!r}"
                     + (f"; did you mean {', '.join(map(repr, close))}?" if close else ""))
        if not record.name and record.signal == LOG:
            lines.append("  (log records need an event name: set event_name, or the "
                         "deprecated event.name attribute)")
        lines += _windows_lines(record, windows)
        return lines
    updates: list[tuple[int, str, str]] = []  # (line index, rule, update)
    rejections: list[str] = []
    for rule in rules:
        head = f"  {rule.title}"
        reason = rule.why_not(record)
        if reason is not None:
            lines.append(f"{head}: skipped, {_redacted(reason, record.attributes, identities)}")
            continue
        try:
            value = mapping.evaluate(rule, record)  # exactly what ingesting it would do
        except RecordError as err:
            lines.append(f"{head}: REJECTS the record ({err.reason}): {err}")
            rejections.append(err.reason)
            continue
        if value is None and rule.cost_part is not None:
            lines.append(f"{head}: skipped, the record has no {rule.cost_part} token usage "
                         f"of a model with a known price (the tokens of a model without one "
                         f"count in kpi_exporter_gen_ai_unpriced_tokens_total)")
            continue
        if value is None:
            lines.append(f"{head}: skipped, the record has no {rule.value.describe()}")
            continue
        labels = ", ".join(f'{n}="{v}"' for n, v in zip(rule.metric.label_names,
                                                          rule.label_getter(record)))
        verb = {"counter": "add", "gauge": "set to", "histogram": "observe"}[rule.metric.type]
        if isinstance(value, list):
            verb, shown = "merge", (f"a histogram point of {value[1]} observations "
                                    f"(sum {value[0]:g}) into its buckets")
        elif isinstance(value, Priced):
            shown = (f"{value.usd:g} USD ({value.tokens:g} tokens at "
                     f"{value.usd_per_token * 1e6:g} USD per million)")
        else:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
        if record.signal == METRIC and record.temporality == TEMPORALITY_CUMULATIVE and (
                isinstance(value, list) or rule.metric.type == "counter"):
            shown += " (a cumulative point: only its increase since the stream's last point)"
        update = f"{rule.metric.name}{{{labels}}} {verb} {shown}"
        updates.append((len(lines), head, update))
        lines.append(f"{head}: {update}")
    if rejections:
        # A record is used whole or not at all: one rule's rejection undoes the others.
        for index, head, update in updates:
            lines[index] = f"{head}: would {update}, but the record is rejected"
        lines.append(f"  => REJECTED ({', '.join(dict.fromkeys(rejections))}): a record is used "
                     f"whole or not at all, so nothing is added (no metric, not the KPI "
                     f"windows); the sender's response counts it as rejected")
        return lines
    if not updates:
        lines.append("  => no metric updates: the record is counted as unmatched")
    lines += _windows_lines(record, windows)
    return lines


def _windows_lines(record: Record, windows: WindowsConfig | None) -> list[str]:
    """What the KPI windows do with a record that was not rejected (the event observer's
    rules, in words)."""
    if record.signal != LOG or not record.name:
        return []
    if windows is None or not windows.enabled:
        return ["  KPI windows: off"]
    attrs = record.attributes
    user = attrs.get(windows.user_attribute) not in (None, "")
    session = attrs.get(windows.session_attribute) not in (None, "")
    if not (user or session):
        return [f"  KPI windows: not counted, the event has neither {windows.user_attribute!r} "
                f"nor {windows.session_attribute!r}"]
    counted = [f"its user ({windows.user_attribute})"] if user else []
    if session:
        converting = record.name in windows.conversion_events
        counted.append(f"its session ({windows.session_attribute}"
                       + (", a converting one)" if converting else ")"))
    split = [f"{b.label}=\"{label_str(attrs.get(b.attribute, b.default))}\""
             for b in windows.breakdowns]
    return [f"  KPI windows: count {' and '.join(counted)} by the event's time"
            + (f", also under {', '.join(split)}" if split else "")]
