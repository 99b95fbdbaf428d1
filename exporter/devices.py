"""The visitor's device class, browser and operating system from its user agent string.

``ua-parser`` (uap-core's rules; with its Rust accelerator ``ua-parser-rs`` when installed,
else its pure-Python resolver, which gives the same answers about 100 times slower) names
the browser, OS and device; it gives no device *class*, so the class follows one rule:

- ``bot``: uap-core calls the device ``Spider`` (declared crawlers), or the browser is one
  of the HTTP tools and headless browsers in :data:`NON_BROWSERS`, or the sender says so
  (``user_agent.synthetic.type`` bot or test);
- ``tablet``: an iPad, a device whose brand or name says tablet, or Android without the
  ``Mobile`` token;
- ``mobile``: a mobile OS (iOS, Android, ...) or a generic smartphone;
- ``desktop``: a desktop OS, or any other browser uap-core knows;
- ``unknown``: nothing recognisable.

The client may know better: an iPad in "desktop website" mode sends a Mac's user agent.
A screen class the page sends (``app.screen.class``: mobile, tablet or desktop) wins over the
user agent (bots stay bots), and ``browser.mobile: true`` turns a desktop into a mobile.
Browser names are merged across platforms (Mobile Safari is Safari, Chrome Mobile is
Chrome): the device class says the rest. Results are cached per user agent string.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import ua_parser

__all__ = ["DeviceDetector", "Client", "BOT", "DESKTOP", "MOBILE", "TABLET", "UNKNOWN",
           "DEVICE_CLASSES", "NON_BROWSERS", "resolver_name"]

BOT, DESKTOP, MOBILE, TABLET, UNKNOWN = "bot", "desktop", "mobile", "tablet", "unknown"
DEVICE_CLASSES = (DESKTOP, MOBILE, TABLET, BOT, UNKNOWN)
SCREEN_CLASSES = frozenset({DESKTOP, MOBILE, TABLET})

# Browser families of HTTP libraries, command-line tools and headless browsers: uap-core
# names them, but does not call them spiders.
NON_BROWSERS = frozenset({
    "HeadlessChrome", "curl", "Wget", "Python Requests", "Python-urllib", "Go-http-client",
    "okhttp", "Apache-HttpClient", "PhantomJS", "HTTPie", "axios", "node-fetch", "Java",
    "aiohttp", "libwww-perl", "Scrapy",
})
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS",
                        "Firefox OS", "HarmonyOS", "Symbian OS", "iPadOS"})
_DESKTOP_OS = frozenset({"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora",
                         "Debian", "FreeBSD", "OpenBSD", "NetBSD", "Solaris", "Red Hat", "SUSE",
                         "Mint"})
# Merged browser names: the same browser on a phone and a desktop is one browser.
_BROWSER_NAMES = {
    "Mobile Safari": "Safari", "Mobile Safari UI/WKWebView": "Safari",
    "Chrome Mobile": "Chrome", "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome WebView", "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox", "Edge Mobile": "Edge", "Opera Mobile": "Opera",
    "Samsung Internet": "Samsung Internet",
}
_OS_NAMES = {"Mac OS X": "macOS"}


@functools.cache
def _default_parser() -> ua_parser.Parser:
    # Built once per process (a quarter of a second): every exporter built here shares it.
    matchers = (ua_parser.load_lazy_builtins() if resolver_name() != "basic"
                else ua_parser.load_builtins())
    return ua_parser.Parser(ua_parser.BestAvailableResolver(matchers))


def resolver_name() -> str:
    """Which ua-parser resolver is used: regex (ua-parser-rs), re2 or basic (pure Python)."""
    best = ua_parser.BestAvailableResolver
    if best is ua_parser.BasicResolver:
        return "basic"
    return "re2" if best is getattr(ua_parser, "Re2Resolver", None) else "regex"


@dataclass(frozen=True)
class Client:
    """A user agent, classified: device class, browser and OS names (``unknown`` when not
    known)."""

    device: str
    browser: str
    os: str


class DeviceDetector:
    """User agent strings to :class:`Client`. Thread-safe; ``parser`` defaults to the best
    resolver installed (built once, here, so the first request does not pay for it)."""

    def __init__(self, parser: ua_parser.Parser | None = None, cache_size: int = 4096):
        self.parser = parser if parser is not None else _default_parser()
        self.detect = functools.lru_cache(maxsize=cache_size)(self._detect)

    def _detect(self, ua: str) -> Client:
        """Classifies one user agent string (see the module docstring)."""
        if not ua:
            return Client(UNKNOWN, UNKNOWN, UNKNOWN)
        r = self.parser.parse(ua)
        family = r.user_agent.family if r.user_agent else None
        os_family = r.os.family if r.os else None
        d = r.device
        browser = _BROWSER_NAMES.get(family or "", family or UNKNOWN)
        os_name = _OS_NAMES.get(os_family or "", os_family or UNKNOWN)
        if (d is not None and d.family == "Spider") or family in NON_BROWSERS:
            return Client(BOT, family or UNKNOWN, os_name)
        if d is not None and (d.family == "iPad" or (d.brand or "").endswith("_Tablet")
                              or "Tablet" in (d.family or "") or d.model == "Tablet"):
            device = TABLET
        elif os_family == "Android" and "Mobile" not in ua:
            device = TABLET
        elif os_family in _MOBILE_OS or (d is not None and d.model == "Smartphone"):
            device = MOBILE
        elif os_family in _DESKTOP_OS:
            device = DESKTOP
        else:
            device = UNKNOWN if family in (None, "Other") else DESKTOP
        if family in (None, "Other"):
            browser = UNKNOWN
        return Client(device, browser, os_name)

    def classify(self, ua: str | None, screen_class: str | None = None,
                 mobile: bool | None = None, synthetic: str | None = None) -> Client:
        """The client of one event: its user agent, corrected by what the page knows (see
        the module docstring)."""
        client = self.detect(ua) if ua else Client(UNKNOWN, UNKNOWN, UNKNOWN)
        if synthetic in ("bot", "test"):
            return Client(BOT, client.browser, client.os)
        if client.device == BOT:
            return client
        if screen_class in SCREEN_CLASSES and screen_class != client.device:
            return Client(screen_class, client.browser, client.os)
        if mobile is True and client.device == DESKTOP:
            return Client(MOBILE, client.browser, client.os)
        return client
