"""Referrer host names to source names: Matomo's public-domain lists of search engines,
social networks and AI assistants (``lists/``), a short list of webmail and app hosts of our
own, and the hosts a config adds.

A host is looked up most specific first: ``l.facebook.com``, then ``facebook.com``; at one
level, a host of the config wins over webmail, AI assistants, social networks and search
engines, in that order (Matomo lists ``www.facebook.com`` and ``chatgpt.com`` as search
engines too). Matomo's ``{}`` placeholders stand for a country top-level domain
(``google.{}`` matches ``google.de`` and ``google.co.uk``) or a sub-domain
(``{}.bing.com``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable

import yaml

__all__ = ["Source", "ReferrerTable", "SEARCH", "SOCIAL", "EMAIL", "AI", "REFERRAL",
           "MEDIUMS", "normalize_host", "builtin_entries"]

SEARCH, SOCIAL, EMAIL, AI, REFERRAL = "search", "social", "email", "ai", "referral"
MEDIUMS = (SEARCH, SOCIAL, EMAIL, AI, REFERRAL)

# Matomo spells a few names in a way nobody would put on a dashboard.
_DISPLAY = {"reddit": "Reddit", "Google%2B": "Google+", "tumblr": "Tumblr", "gree": "GREE",
            "hi5": "Hi5"}

# Webmail and Android apps (referrers like android-app://com.google.android.gm/), which the
# Matomo lists do not cover.
_OWN: tuple[tuple[str, str, str], ...] = (
    ("mail.google.com", "Gmail", EMAIL),
    ("com.google.android.gm", "Gmail", EMAIL),
    ("outlook.live.com", "Outlook", EMAIL),
    ("outlook.office.com", "Outlook", EMAIL),
    ("outlook.office365.com", "Outlook", EMAIL),
    ("com.microsoft.office.outlook", "Outlook", EMAIL),
    ("mail.yahoo.com", "Yahoo Mail", EMAIL),
    ("mail.proton.me", "Proton Mail", EMAIL),
    ("mail.zoho.com", "Zoho Mail", EMAIL),
    ("com.google.android.googlequicksearchbox", "Google", SEARCH),
    ("com.google.android.apps.searchlite", "Google", SEARCH),
    ("com.facebook.katana", "Facebook", SOCIAL),
    ("com.instagram.android", "Instagram", SOCIAL),
    ("com.linkedin.android", "LinkedIn", SOCIAL),
    ("com.twitter.android", "Twitter", SOCIAL),
    ("com.reddit.frontpage", "Reddit", SOCIAL),
    ("org.telegram.messenger", "Telegram", SOCIAL),
    ("com.slack", "Slack", SOCIAL),
    ("app.slack.com", "Slack", SOCIAL),
    ("com.openai.chatgpt", "ChatGPT", AI),
)

_COUNTRY_SECOND_LEVEL = frozenset({"com", "co", "org", "net", "edu", "gov", "ac", "ne", "or",
                                   "go", "it", "gob", "nic"})


def normalize_host(host: str) -> str:
    """Lower case, without a port, a trailing dot or a leading ``www.``."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") or host.count(":") > 1:
        return host  # an IPv6 literal: no port to strip
    host = host.partition(":")[0]
    return host[4:] if host.startswith("www.") else host


@dataclass(frozen=True)
class Source:
    """What a referrer host stands for: a display name and a medium (search, social, email,
    ai, referral)."""

    name: str
    medium: str


def _looks_like_tld(labels: list[str]) -> bool:
    if len(labels) == 1:
        return labels[0].isalpha() and 2 <= len(labels[0]) <= 6
    return (len(labels) == 2 and labels[0] in _COUNTRY_SECOND_LEVEL
            and labels[1].isalpha() and len(labels[1]) == 2)


class ReferrerTable:
    """Host patterns to sources; built once, looked up per new visit."""

    def __init__(self, entries: Iterable[tuple[str, str, str]]):
        """``entries`` are (pattern, name, medium) in priority order: the first of equally
        specific patterns wins. A pattern is a host (``news.ycombinator.com``), a host and a
        path prefix (``x.com/i/grok``), ``name.{}`` or ``{}.host``."""
        self._exact: dict[str, Source] = {}
        self._paths: dict[str, list[tuple[str, Source]]] = {}
        self._tld: dict[str, Source] = {}
        self._sub: dict[str, Source] = {}
        for pattern, name, medium in entries:
            source = Source(_DISPLAY.get(name, name), medium)
            host, _, path = pattern.strip().lower().partition("/")
            if host.startswith("www."):
                host = host[4:]
            if not host:
                continue
            if host.startswith("{}."):
                self._sub.setdefault(host[3:], source)
            elif host.endswith(".{}"):
                self._tld.setdefault(host[:-3], source)
            elif "{}" in host:
                continue  # a placeholder in the middle: none of the lists uses one usefully
            elif path:
                self._paths.setdefault(host, []).append(("/" + path.rstrip("/"), source))
            else:
                self._exact.setdefault(host, source)

    def __len__(self) -> int:
        return len(self._exact) + len(self._tld) + len(self._sub) + sum(
            map(len, self._paths.values()))

    def lookup(self, host: str, path: str = "") -> Source | None:
        """The source of a referrer host (already normalized), or None when no list knows
        it. ``path`` is the referrer's path, for the few entries that name one."""
        labels = host.split(".")
        n = len(labels)
        for i in range(max(1, n - 1)):
            h = ".".join(labels[i:]) if i else host
            if path and h in self._paths:
                for prefix, source in self._paths[h]:
                    if path.startswith(prefix):
                        return source
            found = self._exact.get(h)
            if found is not None:
                return found
            for k in (1, 2):
                if n - i > k and _looks_like_tld(labels[n - k:]):
                    found = self._tld.get(".".join(labels[i:n - k]))
                    if found is not None:
                        return found
            if n - i > 2:
                found = self._sub.get(".".join(labels[i + 1:]))
                if found is not None:
                    return found
        return None

    def names(self) -> dict[str, Source]:
        """Every known source by its lower-case name (to recognise ``utm_source=google``)."""
        out: dict[str, Source] = {}
        for table in (self._exact, self._tld, self._sub):
            for source in table.values():
                out.setdefault(source.name.lower(), source)
        for pairs in self._paths.values():
            for _, source in pairs:
                out.setdefault(source.name.lower(), source)
        return out


def _load(name: str) -> Any:
    text = resources.files("exporter.acquisition").joinpath(f"lists/{name}").read_text("utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader


@functools.cache
def builtin_entries() -> tuple[tuple[str, str, str], ...]:
    """Our webmail and app hosts, then Matomo's AI assistants, social networks and search
    engines, as (pattern, name, medium) in that priority (read once per process)."""
    entries = list(_OWN)
    for file, medium in (("AIAssistants.yml", AI), ("Socials.yml", SOCIAL)):
        for name, hosts in (_load(file) or {}).items():
            entries += [(str(h), str(name), medium) for h in hosts or ()]
    for name, configs in (_load("SearchEngines.yml") or {}).items():
        for config in configs or ():
            entries += [(str(h), str(name), SEARCH) for h in (config or {}).get("urls") or ()]
    return tuple(entries)
