"""Visit attributes derived at ingest from what pages send: where the visit came from
(source, medium, campaign), the device class, browser and OS, and the country.

The pipeline runs :class:`VisitEnricher` on every batch of events, after the privacy
denylist: it writes the derived attributes on the records (unless the sender set them
already), so mapping rules, window breakdowns and the visit metrics can all use them. Records
without any of the inputs cost a few dictionary look-ups; user agents and referrers are
classified once and cached.

Events of bots lose their identity attributes here (unless ``web_analytics.bots: include``): no KPI
window or visit counts them, and the built-in rule ``app_bot_events_total`` counts them apart.
"""

from __future__ import annotations

from typing import Any

from exporter.acquisition import Acquisition
from exporter.devices import BOT, Client, DeviceDetector
from exporter.records import LOG, Batch
from exporter.rules import label_str
from exporter.web_analytics import EXCLUDE, WebAnalyticsConfig

__all__ = ["VisitEnricher", "INPUTS", "DERIVED", "SOURCE", "MEDIUM", "CAMPAIGN", "DEVICE",
           "BROWSER", "OS", "COUNTRY", "SERVICE", "ROUTE", "INTERACTIVE", "country_code"]

# What pages send (docs/events.md).
USER_AGENT = "user_agent.original"
REFERRER = "app.referrer"
REFERER_HEADER = "http.request.header.referer"  # semantic conventions: an array of strings
URL_FULL = "url.full"
URL_QUERY = "url.query"
UTM_SOURCE, UTM_MEDIUM, UTM_CAMPAIGN = "app.utm.source", "app.utm.medium", "app.utm.campaign"
SCREEN_CLASS = "app.screen.class"
BROWSER_MOBILE = "browser.mobile"
SYNTHETIC = "user_agent.synthetic.type"
COUNTRY = "geo.country.iso_code"
COUNTRY_LEGACY = "geo.country_iso_code"  # older Collector geoip processors
SERVICE = "service.name"
ROUTE = "url.path"
INTERACTIVE = "app.interactive"
INPUTS = (USER_AGENT, REFERRER, REFERER_HEADER, URL_FULL, URL_QUERY, UTM_SOURCE, UTM_MEDIUM,
          UTM_CAMPAIGN, SCREEN_CLASS, BROWSER_MOBILE, SYNTHETIC, COUNTRY, COUNTRY_LEGACY)

# What the enricher writes (the semantic conventions' user_agent.name and user_agent.os.name
# for the browser and OS).
SOURCE, MEDIUM, CAMPAIGN = ("app.acquisition.source", "app.acquisition.medium",
                            "app.acquisition.campaign")
DEVICE = "app.device.class"
BROWSER = "user_agent.name"
OS = "user_agent.os.name"
DERIVED = (SOURCE, MEDIUM, CAMPAIGN, DEVICE, BROWSER, OS)
_CLIENT_CACHE = 4096


def country_code(value: Any) -> str | None:
    """An ISO 3166-1 alpha-2 code in upper case, or None for anything else."""
    if type(value) is str and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return None


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):  # http.request.header.referer is string[]
        return _text(value[0]) if value else None
    return value if type(value) is str else label_str(value)


class VisitEnricher:
    """A pipeline filter writing :data:`DERIVED` attributes (and a normalized
    ``geo.country.iso_code``) on the events of every batch. ``attributes`` names what it
    reads and writes, so decoders extract them."""

    name = "web_analytics"

    def __init__(self, config: WebAnalyticsConfig, identity_keys: tuple[str, ...],
                 acquisition: Acquisition, devices: DeviceDetector):
        self.config = config
        self.identity_keys = identity_keys
        self.acquisition = acquisition
        self.devices = devices
        self.page_views = frozenset(config.page_view_events)
        self.exclude_bots = config.bots == EXCLUDE
        self.attributes = frozenset((*INPUTS, *DERIVED))
        # (user agent, screen class, browser.mobile, synthetic type) -> Client
        self._clients: dict[tuple[Any, ...], Client] = {}

    def __call__(self, batch: Batch) -> None:
        if batch.signal != LOG:
            return
        page_views = self.page_views
        for record in batch.records:
            if not record.name:
                continue
            attrs = record.attributes
            ua = attrs.get(USER_AGENT)
            screen = attrs.get(SCREEN_CLASS)
            if ua is not None or screen is not None or SYNTHETIC in attrs:
                self._client(attrs, ua, screen)
            country = attrs.get(COUNTRY)
            if country is None:
                country = attrs.get(COUNTRY_LEGACY)
            if country is not None:
                code = country_code(country)
                if code is None:
                    attrs.pop(COUNTRY, None)
                else:
                    attrs[COUNTRY] = code
            referrer = attrs.get(REFERRER)
            if referrer is None:
                referrer = attrs.get(REFERER_HEADER)
            if (referrer is not None or record.name in page_views) and SOURCE not in attrs:
                found = self.acquisition.classify(
                    _text(referrer), _text(attrs.get(URL_FULL)), _text(attrs.get(URL_QUERY)),
                    _text(attrs.get(UTM_SOURCE)), _text(attrs.get(UTM_MEDIUM)),
                    _text(attrs.get(UTM_CAMPAIGN)))
                if found is not None:  # None: a step inside the site, not where a visit began
                    attrs[SOURCE] = found[0]
                    attrs.setdefault(MEDIUM, found[1])
                    attrs.setdefault(CAMPAIGN, found[2])

    def _client(self, attrs: dict[str, Any], ua: Any, screen: Any) -> None:
        mobile, synthetic = attrs.get(BROWSER_MOBILE), attrs.get(SYNTHETIC)
        key: tuple[Any, ...] | None = (ua, screen, mobile, synthetic)
        try:
            client = self._clients.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable value (an array attribute)
            client, key = None, None
        if client is None:
            client = self.devices.classify(
                _text(ua), screen if type(screen) is str else None,
                mobile if type(mobile) is bool else None, _text(synthetic))
            if key is not None:
                if len(self._clients) >= _CLIENT_CACHE:
                    self._clients = {}
                self._clients[key] = client
        if DEVICE not in attrs:
            attrs[DEVICE] = client.device
        attrs.setdefault(BROWSER, client.browser)
        attrs.setdefault(OS, client.os)
        if attrs[DEVICE] == BOT and self.exclude_bots:
            for identity in self.identity_keys:
                attrs.pop(identity, None)
