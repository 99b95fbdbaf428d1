"""Checks in the spirit of mixtool lint and Grafana's dashboard-linter, over the generated
files (or any dashboard JSON and rule file of the same shape).

Each function returns a list of problems, one sentence each, naming the dashboard and panel
or the rule; an empty list means clean.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from mixin.alerts import SEVERITIES

__all__ = ["lint_dashboard", "lint_dashboards", "lint_alert_rules", "lint_recording_rules",
           "panel_targets", "github_anchors", "range_selectors"]

_UID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_RECORD = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]+$")
_RANGE_FUNCS = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv|[a-z]+_over_time)\s*\(")
_RANGE = re.compile(r"\[([^\]]*)\]")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows and the panels inside collapsed rows)."""
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    for p in panels(dashboard):
        for t in p.get("targets", []):
            yield p, t


def range_selectors(expr: str) -> list[str]:
    """The durations of every range selector ``[...]`` in a PromQL expression."""
    return _RANGE.findall(expr)


def _uses_datasource_variable(ref: Any) -> bool:
    return isinstance(ref, dict) and ref.get("uid") == "${datasource}"


def lint_dashboard(d: dict[str, Any], tag: str) -> list[str]:
    """Problems of one dashboard against the conventions of mixin/dashboards.py."""
    name = d.get("title") or "<untitled dashboard>"
    out: list[str] = []
    uid = d.get("uid")
    if not isinstance(uid, str) or not _UID.match(uid):
        out.append(f"{name}: needs a stable uid of at most 40 lowercase letters, digits, "
                   f"dashes (got {uid!r})")
    text = repr(d)
    if "DS_PROMETHEUS" in text or "__inputs" in d:
        out.append(f"{name}: uses ${{DS_PROMETHEUS}} inputs, which file provisioning cannot "
                   "resolve; use the datasource variable")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        out.append(f"{name}: needs a 'datasource' variable of type datasource for prometheus")
    elif ds.get("label") != "Data source":
        out.append(f"{name}: the datasource variable's label must be 'Data source'")
    for var in ("job", "instance"):
        v = variables.get(var)
        if not v or v.get("type") != "query":
            out.append(f"{name}: needs a '{var}' query variable")
    for vname, v in variables.items():
        if v.get("type") == "query" and not _uses_datasource_variable(v.get("datasource")):
            out.append(f"{name}: variable {vname} must query ${{datasource}}")
    if tag not in d.get("tags", []):
        out.append(f"{name}: needs the tag {tag!r}")
    if not any(link.get("type") == "dashboards" and tag in link.get("tags", [])
               for link in d.get("links", [])):
        out.append(f"{name}: needs a link to the other dashboards (type dashboards, tag {tag!r})")
    if not d.get("time", {}).get("from") or not d.get("refresh"):
        out.append(f"{name}: needs a default time range and refresh")
    seen_titles: set[str] = set()
    for p in panels(d):
        title = p.get("title") or f"panel {p.get('id')}"
        where = f"{name} / {title}"
        if title in seen_titles:
            out.append(f"{where}: two panels share this title")
        seen_titles.add(title)
        if not p.get("description"):
            out.append(f"{where}: needs a description")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            out.append(f"{where}: needs a unit")
        if not _uses_datasource_variable(p.get("datasource")):
            out.append(f"{where}: must use the ${{datasource}} variable")
        if not p.get("targets"):
            out.append(f"{where}: has no query")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            if not expr:
                out.append(f"{where}: query {t.get('refId')} has no expression")
                continue
            if "datasource" in t and not _uses_datasource_variable(t["datasource"]):
                out.append(f"{where}: query {t.get('refId')} must use the ${{datasource}} "
                           "variable")
            if not _RANGE_FUNCS.search(expr) and range_selectors(expr):
                out.append(f"{where}: range selector outside a range function in {expr!r}")
            # over time: [$__rate_interval]; a total over the dashboard's period (an instant
            # query): [$__range]
            allowed = ("$__rate_interval", "$__range") if t.get("instant") else (
                "$__rate_interval",)
            for r in range_selectors(expr):
                if r not in allowed:
                    out.append(f"{where}: use [{'] or ['.join(allowed)}], not [{r}], in "
                               f"{expr!r}")
            if "$job" not in expr:
                out.append(f"{where}: query {t.get('refId')} ignores the job variable")
    return out


def lint_dashboards(dashboards: dict[str, dict[str, Any]], tag: str) -> list[str]:
    """Problems of every dashboard, plus uids used twice."""
    out = [p for d in dashboards.values() for p in lint_dashboard(d, tag)]
    uids = [d.get("uid") for d in dashboards.values()]
    out += [f"uid {u!r} is used by more than one dashboard" for u in set(uids)
            if uids.count(u) > 1]
    return out


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def lint_alert_rules(doc: dict[str, Any], prefix: str, runbooks_md: str,
                     runbooks_path: str) -> list[str]:
    """Problems of an alert rule file against the mixin conventions."""
    out: list[str] = []
    anchors = github_anchors(runbooks_md)
    name_re = re.compile(rf"^{re.escape(prefix)}[A-Z][a-z0-9]*(?:[A-Z][a-z0-9]*)*$")
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue
            name = rule["alert"]
            if not name_re.match(name):
                out.append(f"{name}: alert names are CamelCase and start with {prefix!r}")
            labels = rule.get("labels", {})
            if labels.get("severity") not in SEVERITIES:
                out.append(f"{name}: severity must be one of {', '.join(SEVERITIES)} "
                           f"(got {labels.get('severity')!r})")
            ann = rule.get("annotations", {})
            summary, description = ann.get("summary", ""), ann.get("description", "")
            if not summary:
                out.append(f"{name}: needs a summary")
            elif "{{" in summary:
                out.append(f"{name}: the summary must be static; put values in the description")
            if not description:
                out.append(f"{name}: needs a description")
            elif "{{" not in description:
                out.append(f"{name}: the description should be templated with the alert's "
                           "labels or value")
            url = ann.get("runbook_url", "")
            page, _, anchor = url.partition("#")
            if not re.match(r"^https?://", page):
                out.append(f"{name}: runbook_url must be an absolute http(s) URL (Alertmanager "
                           f"and Grafana link to it from elsewhere), got {url!r}")
            elif not page.endswith(runbooks_path) or not anchor:
                out.append(f"{name}: runbook_url must point at a section of {runbooks_path}, "
                           f"got {url!r}")
            elif anchor not in anchors:
                out.append(f"{name}: {runbooks_path} has no section #{anchor}")
            if not rule.get("for"):
                out.append(f"{name}: needs a for: duration")
    return out


def lint_recording_rules(doc: dict[str, Any]) -> list[str]:
    """Recording rule names of the form level:metric:operations, each defined once."""
    out: list[str] = []
    seen: set[str] = set()
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("record")
            if name is None:
                continue
            if not _RECORD.match(name):
                out.append(f"{name}: recording rule names are level:metric:operations")
            if name in seen:
                out.append(f"{name}: recorded twice")
            seen.add(name)
    return out
