"""The ``web_analytics`` section: visits that close (bounce rate, duration, entry and exit
pages), where they came from, devices and countries, on top of the events."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from exporter.acquisition import SourceRule
from exporter.acquisition.referrers import MEDIUMS, normalize_host
from exporter.configcheck import (at, get_bool, get_int, get_names, open_section, path,
                                  problem, show, unknown_keys)
from exporter.rules import Rule

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
                       "campaign_label", "internal_hosts", "sources", "bots", "max_values",
                       "max_routes")
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


def _host(value: Any) -> str | None:
    if not isinstance(value, str) or any(c in value for c in "/:@?#"):
        return None
    host = normalize_host(value)
    return host if _HOST_RE.match(host) else None


def _sources(raw: dict[Any, Any], where: str, problems: list[str]) -> tuple[SourceRule, ...]:
    entries = raw.get("sources")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        problems.append(problem(raw, "sources", where, f"expected a list of {{host: ..., source: "
                                                       f"..., medium: ...}} mappings, got "
                                                       f"{show(entries)}"))
        return ()
    out = []
    sw = path(where, "sources")
    for i, entry in enumerate(entries):
        ew = path(sw, i)
        if not isinstance(entry, dict):
            problems.append(problem(entries, i, sw, f"expected a mapping like {{host: "
                                                    f"news.example.org, source: Example News, "
                                                    f"medium: referral}}, got {show(entry)}"))
            continue
        before = len(problems)
        problems.extend(unknown_keys(entry, _SOURCE_KEYS, ew))
        host, utm = entry.get("host"), entry.get("utm_source")
        if (host is None) == (utm is None):
            problems.append(f"{at(entries, i)}{ew}: give either host (a referrer host name, its "
                            f"sub-domains included) or utm_source (a utm_source value), not "
                            f"both or neither")
        clean_host = None
        if host is not None:
            clean_host = _host(host)
            if clean_host is None:
                problems.append(problem(entry, "host", ew, f"expected a host name like "
                                                           f"news.example.org (no scheme, path "
                                                           f"or port), got {show(host)}"))
        if utm is not None and (not isinstance(utm, str) or not utm.strip()):
            problems.append(problem(entry, "utm_source", ew, f"expected a non-empty string, got "
                                                             f"{show(utm)}"))
        source, medium = entry.get("source"), entry.get("medium", "referral")
        if "source" not in entry:
            problems.append(f"{at(entries, i)}{ew}: 'source' is required: the source's display "
                            f"name, like 'Example News'")
        elif not isinstance(source, str) or not source.strip():
            problems.append(problem(entry, "source", ew, f"expected the source's display name, "
                                                         f"like 'Example News', got "
                                                         f"{show(source)}"))
        if not isinstance(medium, str) or not re.match(r"^[a-z0-9_()-]{1,40}$", medium):
            problems.append(problem(entry, "medium", ew, f"expected a lower-case word like "
                                                         f"{', '.join(MEDIUMS)} or cpc, got "
                                                         f"{show(medium)}"))
        if len(problems) > before:
            continue
        out.append(SourceRule(str(source).strip(), str(medium), clean_host,
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
        problems.append(problem(raw, "page_view_events", where, "name at least one event (the "
                                                                "default is [app.page_view])"))
    page_views = page_views or d.page_view_events
    ends = get_names(raw, "session_end_events", where, problems,
                     "event names, like [app.session.end, session.end]")
    if ends is None:
        ends = d.session_end_events
    overlap = set(page_views) & set(ends)
    if overlap:
        problems.append(problem(raw, "session_end_events", where,
                                f"{show(sorted(overlap)[0])} is both a page view and a session "
                                f"end event; an event is one or the other"))
    labels = get_names(raw, "session_labels", where, problems,
                       f"visit dimensions from {', '.join(SESSION_LABEL_CHOICES)}")
    if labels is None:
        labels = d.session_labels
    for label in labels:
        if label not in SESSION_LABEL_CHOICES:
            problems.append(problem(raw, "session_labels", where,
                                    f"{show(label)} is not a visit dimension; choose from "
                                    f"{', '.join(SESSION_LABEL_CHOICES)}"))
    if len(set(labels)) != len(labels):
        problems.append(problem(raw, "session_labels", where, "a dimension is listed twice"))
    campaign = get_bool(raw, "campaign_label", where, problems, d.campaign_label)
    hosts = get_names(raw, "internal_hosts", where, problems,
                      "host names, like [www.example.com, shop.example.com]") or ()
    clean_hosts = []
    for h in hosts:
        clean = _host(h)
        if clean is None:
            problems.append(problem(raw, "internal_hosts", where,
                                    f"{show(h)} is not a host name (write www.example.com: no "
                                    f"scheme, path or port)"))
        else:
            clean_hosts.append(clean)
    bots = raw.get("bots", d.bots)
    if not isinstance(bots, str) or bots not in (EXCLUDE, INCLUDE):
        problems.append(problem(raw, "bots", where,
                                f"expected {EXCLUDE!r} (bots count only in app_bot_events_total) "
                                f"or {INCLUDE!r} (they count as visitors), got {show(bots)}"))
        bots = d.bots
    max_values = get_int(raw, "max_values", where, problems, d.max_values, low=2, high=5_000,
                         hint=f" (the distinct values each visit dimension may take; default "
                              f"{d.max_values})")
    max_routes = get_int(raw, "max_routes", where, problems, d.max_routes, low=2, high=60_000,
                         hint=f" (the distinct entry and exit routes; default {d.max_routes})")
    if enabled:
        for rule in user_rules:
            if rule.metric.name in VISIT_METRICS:
                problems.append((f"line {rule.line}: " if rule.line else "") +
                                f"{rule.title}: {rule.metric.name!r} is a visit metric "
                                f"(docs/kpis.md); rename the rule's metric, or set "
                                f"web_analytics.enabled: false")
    return WebAnalyticsConfig(enabled, tuple(page_views), tuple(ends),
                              tuple(dict.fromkeys(labels)), campaign, tuple(clean_hosts),
                              _sources(raw, where, problems), bots, max_values, max_routes)
