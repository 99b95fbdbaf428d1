"""The ``web_analytics`` section: visits that close (bounce rate, duration, entry and exit
pages), where they came from, devices and countries, on top of the events."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from exporter.acquisition import SourceRule
from exporter.acquisition.referrers import MEDIUMS, normalize_host
from exporter.configcheck import get_bool, get_names, open_section
from exporter.rules import Rule
from exporter.yamlload import line_of

__all__ = ["WebAnalyticsConfig", "parse_web_analytics", "DIMENSIONS", "SESSION_LABEL_CHOICES",
           "EXCLUDE", "INCLUDE", "VISIT_METRICS"]

# What a visit is described by, in the order visits keep them.
DIMENSIONS = ("service_name", "source", "medium", "campaign", "device", "browser", "os",
              "country")
# The dimensions the closed-visit metrics may be labelled by (service_name always is).
SESSION_LABEL_CHOICES = DIMENSIONS[1:]
EXCLUDE, INCLUDE = "exclude", "include"
# The metrics visits are counted in (exporter/sessions/metrics.py); rules may not feed them.
VISIT_METRICS = ("app_sessions_started_total", "app_sessions_started_by_client_total",
                 "app_sessions_closed_total", "app_sessions_bounced_total",
                 "app_sessions_converted_total", "app_session_duration_seconds",
                 "app_session_page_views", "app_session_entries_total",
                 "app_session_exits_total")

_WEB_ANALYTICS_KEYS = ("enabled", "page_view_events", "session_end_events", "session_labels",
             "campaign_label", "internal_hosts", "sources", "bots", "max_values", "max_routes")
_SOURCE_KEYS = ("host", "utm_source", "source", "medium")
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class WebAnalyticsConfig:
    """The ``web_analytics`` section."""

    enabled: bool = True
    page_view_events: tuple[str, ...] = ("app.page_view",)
    # Events that end their visit at once (the semantic conventions' session.end too).
    session_end_events: tuple[str, ...] = ("app.session.end", "session.end")
    # Labels of the closed-visit metrics, besides service_name.
    session_labels: tuple[str, ...] = ("source", "device", "country")
    # Whether app_sessions_started_total has a campaign label.
    campaign_label: bool = False
    internal_hosts: tuple[str, ...] = ()
    sources: tuple[SourceRule, ...] = ()
    # Whether events of bots count as visits and users (include) or only in
    # app_bot_events_total (exclude).
    bots: str = EXCLUDE
    # Distinct values each visit dimension (source, browser, ...) may take in this process;
    # later ones are counted as "(other)".
    max_values: int = 50
    # Distinct entry and exit routes; later ones are counted as "(other)".
    max_routes: int = 500


def _int(raw: dict[str, Any], key: str, where: str, problems: list[str], low: int, high: int,
         default: int, meaning: str) -> int:
    if key not in raw:
        return default
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        problems.append(f"{where}: {key}: expected {meaning}, an integer from {low} to {high} "
                        f"(default {default}), got {v!r}")
        return default
    return v


def _host(value: Any) -> str | None:
    if not isinstance(value, str) or any(c in value for c in "/:@?#"):
        return None
    host = normalize_host(value)
    return host if _HOST_RE.match(host) else None


def _sources(raw: Any, problems: list[str]) -> tuple[SourceRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append("web_analytics: sources: expected a list of {host: ..., source: ..., "
                        "medium: ...} mappings")
        return ()
    out = []
    for i, entry in enumerate(raw):
        line = line_of(entry)
        where = f"web_analytics.sources[{i}]" + (f" (line {line})" if line else "")
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping like {{host: news.example.org, "
                            f"source: Example News, medium: referral}}")
            continue
        bad = [k for k in entry if k not in _SOURCE_KEYS]
        if bad:
            problems.append(f"{where}: unknown key {bad[0]!r}; known keys: "
                            f"{', '.join(_SOURCE_KEYS)}")
            continue
        host, utm = entry.get("host"), entry.get("utm_source")
        if (host is None) == (utm is None):
            problems.append(f"{where}: give either host (a referrer host name, its sub-domains "
                            f"included) or utm_source (a utm_source value), not both or neither")
            continue
        clean_host = None
        if host is not None:
            clean_host = _host(host)
            if clean_host is None:
                problems.append(f"{where}: host: expected a host name like news.example.org "
                                f"(no scheme, path or port), got {host!r}")
                continue
        if utm is not None and (not isinstance(utm, str) or not utm.strip()):
            problems.append(f"{where}: utm_source: expected a non-empty string, got {utm!r}")
            continue
        source, medium = entry.get("source"), entry.get("medium", "referral")
        if not isinstance(source, str) or not source.strip():
            problems.append(f"{where}: source: expected the source's display name, like "
                            f"'Example News', got {source!r}")
            continue
        if not isinstance(medium, str) or not re.match(r"^[a-z0-9_()-]{1,40}$", medium):
            problems.append(f"{where}: medium: expected a lower-case word like "
                            f"{', '.join(MEDIUMS)} or cpc, got {medium!r}")
            continue
        out.append(SourceRule(source.strip(), medium, clean_host,
                              utm.strip() if isinstance(utm, str) else None))
    return tuple(out)


def parse_web_analytics(raw: Any, user_rules: list[Rule],
                        problems: list[str]) -> WebAnalyticsConfig:
    """Parses the ``web_analytics`` section; each problem names the key and what to do.
    ``user_rules`` may not feed the metrics visits are counted in."""
    raw, where = open_section(raw, "web_analytics", _WEB_ANALYTICS_KEYS,
                              "'session_labels' and 'sources'", problems)
    d = WebAnalyticsConfig()
    enabled = get_bool(raw, "enabled", where, problems, d.enabled)
    page_views = get_names(raw, "page_view_events", where, problems,
                           "event names, like [app.page_view]")
    if page_views == ():
        problems.append(f"{where}: page_view_events: name at least one event (the default is "
                        f"[app.page_view])")
    page_views = page_views or d.page_view_events
    ends = get_names(raw, "session_end_events", where, problems,
                     "event names, like [app.session.end, session.end]")
    if ends is None:
        ends = d.session_end_events
    overlap = set(page_views) & set(ends)
    if overlap:
        problems.append(f"{where}: {sorted(overlap)[0]!r} is both a page view and a session end "
                        f"event; an event is one or the other")
    labels = get_names(raw, "session_labels", where, problems,
                       f"visit dimensions from {', '.join(SESSION_LABEL_CHOICES)}")
    if labels is None:
        labels = d.session_labels
    for label in labels:
        if label not in SESSION_LABEL_CHOICES:
            problems.append(f"{where}: session_labels: {label!r} is not a visit dimension; "
                            f"choose from {', '.join(SESSION_LABEL_CHOICES)}")
    if len(set(labels)) != len(labels):
        problems.append(f"{where}: session_labels: a dimension is listed twice")
    campaign = get_bool(raw, "campaign_label", where, problems, d.campaign_label)
    hosts = get_names(raw, "internal_hosts", where, problems,
                      "host names, like [www.example.com, shop.example.com]") or ()
    clean_hosts = []
    for h in hosts:
        clean = _host(h)
        if clean is None:
            problems.append(f"{where}: internal_hosts: {h!r} is not a host name (write "
                            f"www.example.com: no scheme, path or port)")
        else:
            clean_hosts.append(clean)
    bots = raw.get("bots", d.bots)
    if bots not in (EXCLUDE, INCLUDE):
        problems.append(f"{where}: bots: expected {EXCLUDE!r} (bots count only in "
                        f"app_bot_events_total) or {INCLUDE!r} (they count as visitors), "
                        f"got {bots!r}")
        bots = d.bots
    max_values = _int(raw, "max_values", where, problems, 2, 5_000, d.max_values,
                      "the distinct values each visit dimension may take")
    max_routes = _int(raw, "max_routes", where, problems, 2, 60_000, d.max_routes,
                      "the distinct entry and exit routes")
    if enabled:
        for rule in user_rules:
            if rule.metric.name in VISIT_METRICS:
                problems.append(f"{rule.title}: {rule.metric.name!r} is a visit metric "
                                f"(docs/kpis.md); rename the rule's metric, or set "
                                f"web_analytics.enabled: false")
    return WebAnalyticsConfig(enabled, tuple(page_views), tuple(ends),
                     tuple(dict.fromkeys(labels)), campaign, tuple(clean_hosts),
                     _sources(raw.get("sources"), problems), bots, max_values, max_routes)
