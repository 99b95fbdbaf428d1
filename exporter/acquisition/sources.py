"""Where a visit came from: source, medium and campaign, from the page's UTM parameters and
its referrer.

In order (as Plausible does it):

1. ``utm_source`` (or the ``source`` or ``ref`` query parameter) names the source; a name
   the referrer lists know, in any case, or an alias like ``fb``, becomes its display name
   (``google`` -> Google). ``utm_medium`` is the medium (lower case); without one, a known
   source's medium is taken (search, social, email, ai), else ``(not set)``.
2. ``gclid`` (Google Ads) or ``msclkid`` (Microsoft Ads) without UTM: Google or Bing, ``cpc``.
3. A referrer from another host: the lists' name and medium, else the host itself (without
   ``www.``) with medium ``referral``. Referrers from the page's own host, from
   ``web_analytics.internal_hosts`` and from ``localhost`` are internal: they say nothing
   about where the visit came from.
4. Nothing: ``Direct / None``, medium ``(none)``. A page reached from an internal referrer
   without UTM parameters gets no attribution at all (None): it is a step inside a visit,
   not its start.

The campaign is ``utm_campaign``, else ``(none)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import parse_qsl, urlsplit

from exporter.acquisition.referrers import (
    AI, EMAIL, REFERRAL, SEARCH, SOCIAL, ReferrerTable, Source, builtin_entries, normalize_host,
)

__all__ = ["Acquisition", "SourceRule", "Attribution", "DIRECT", "NO_MEDIUM", "NO_CAMPAIGN",
           "NOT_SET", "PAID_MEDIUM", "parse_utm"]

DIRECT = "Direct / None"
NO_MEDIUM = "(none)"
NO_CAMPAIGN = "(none)"
NOT_SET = "(not set)"
PAID_MEDIUM = "cpc"

# Attribution = (source, medium, campaign)
Attribution = tuple[str, str, str]

# utm_source values that name a well-known source by another name.
_ALIASES: dict[str, Source] = {
    "fb": Source("Facebook", SOCIAL), "ig": Source("Instagram", SOCIAL),
    "yt": Source("YouTube", SOCIAL), "tw": Source("Twitter", SOCIAL),
    "x": Source("Twitter", SOCIAL), "li": Source("LinkedIn", SOCIAL),
    "hn": Source("Hacker News", SOCIAL), "hackernews": Source("Hacker News", SOCIAL),
    "adwords": Source("Google", SEARCH), "gads": Source("Google", SEARCH),
    "google_ads": Source("Google", SEARCH), "bing_ads": Source("Bing", SEARCH),
    "gmail": Source("Gmail", EMAIL), "chatgpt.com": Source("ChatGPT", AI),
    "perplexity": Source("Perplexity", AI),
}
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_REFERRER_SCHEMES = frozenset({"http", "https", "android-app"})
# What _referrer answers for a referrer on one of the site's own hosts.
_INTERNAL = Source("", "")
# The query parameters worth parsing a query string for.
_QUERY_HINTS = ("utm_", "gclid", "msclkid", "ref=", "source=")


@dataclass(frozen=True)
class SourceRule:
    """One entry of ``web_analytics.sources``: a referrer host (and its sub-domains) or a
    ``utm_source`` value, and the source and medium it stands for."""

    source: str
    medium: str
    host: str | None = None
    utm_source: str | None = None


def parse_utm(query: str) -> tuple[str | None, str | None, str | None, bool, bool]:
    """(source, medium, campaign, has gclid, has msclkid) from a query string (no '?')."""
    if not query or not any(h in query for h in _QUERY_HINTS):
        return None, None, None, False, False
    params: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=False):
        params.setdefault(k.lower(), v)
    source = params.get("utm_source") or params.get("source") or params.get("ref")
    return (source, params.get("utm_medium"), params.get("utm_campaign"),
            "gclid" in params, "msclkid" in params)


class Acquisition:
    """Classifies a visit's referrer and landing URL. Thread-safe; results are cached."""

    def __init__(self, rules: Sequence[SourceRule] = (), internal_hosts: Sequence[str] = (),
                 table: ReferrerTable | None = None, cache_size: int = 8192):
        host_rules = [(r.host, r.source, r.medium) for r in rules if r.host]
        if table is None:
            table = ReferrerTable([*host_rules, *builtin_entries()])
        elif host_rules:
            raise ValueError("give the host rules in the table, or no table")
        self.table = table
        self._names = {**table.names(), **_ALIASES}
        for r in rules:
            if r.utm_source:
                self._names[r.utm_source.lower()] = Source(r.source, r.medium)
            self._names.setdefault(r.source.lower(), Source(r.source, r.medium))
        self._internal = frozenset(normalize_host(h) for h in internal_hosts) | _LOCAL_HOSTS
        self.classify = functools.lru_cache(maxsize=cache_size)(self._classify)

    def _utm_source(self, value: str, medium: str | None) -> tuple[str, str]:
        value = value.strip()
        known = self._names.get(value.lower())
        name = known.name if known else value
        if medium:
            return name, medium.strip().lower() or NOT_SET
        return name, known.medium if known else NOT_SET

    def _classify(self, referrer: str | None, page_url: str | None, query: str | None,
                  utm_source: str | None = None, utm_medium: str | None = None,
                  utm_campaign: str | None = None) -> Attribution | None:
        """(source, medium, campaign) of a visit, or None for a page reached from an
        internal referrer. ``query`` is the landing URL's query string; without it, the
        query of ``page_url`` is read. ``utm_*`` come from attributes and win over the
        URL's."""
        if query is None and page_url and "?" in page_url:
            query = page_url.partition("?")[2].partition("#")[0]
        q_source, q_medium, q_campaign, gclid, msclkid = parse_utm(query or "")
        source_value = utm_source or q_source
        medium_value = utm_medium or q_medium
        campaign = (utm_campaign or q_campaign or "").strip() or NO_CAMPAIGN
        if source_value and source_value.strip():
            source, medium = self._utm_source(source_value, medium_value)
            return source, medium, campaign
        if gclid or msclkid:
            return ("Google" if gclid else "Bing"), (medium_value or PAID_MEDIUM), campaign
        found = self._referrer(referrer, page_url)
        if found is _INTERNAL:
            return None
        if found is not None:
            return found.name, (medium_value.strip().lower() if medium_value else found.medium), \
                campaign
        return DIRECT, (medium_value.strip().lower() if medium_value else NO_MEDIUM), campaign

    def _referrer(self, referrer: str | None, page_url: str | None) -> Source | None:
        """The source of an external referrer; None without a usable one; :data:`_INTERNAL`
        for one of the site's own hosts."""
        if not referrer:
            return None
        try:
            parts = urlsplit(referrer.strip())
        except ValueError:
            return None
        if parts.scheme.lower() not in _REFERRER_SCHEMES or not parts.netloc:
            return None
        host = normalize_host(parts.netloc.rpartition("@")[2])
        if not host:
            return None
        if host in self._internal:
            return _INTERNAL
        if page_url:
            try:
                page_host = normalize_host(urlsplit(page_url).netloc.rpartition("@")[2])
            except ValueError:
                page_host = ""
            if host == page_host:
                return _INTERNAL
        found = self.table.lookup(host, parts.path)
        if found is not None:
            return found
        if parts.scheme.lower() == "android-app":
            return Source(f"android-app://{host}", REFERRAL)
        return Source(host, REFERRAL)
