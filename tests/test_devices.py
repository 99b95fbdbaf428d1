"""Device class, browser and OS from user agents, with ua-parser's accelerated and
pure-Python resolvers, and what the page itself says."""

from __future__ import annotations

import pytest
import ua_parser

from exporter.devices import DeviceDetector, resolver_name

# (user agent, device class, browser, OS)
CASES = [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", "desktop", "Chrome", "Windows"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/18.1 Safari/605.1.15", "desktop", "Safari", "macOS"),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
     "desktop", "Firefox", "Ubuntu"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", "desktop", "Edge", "Windows"),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", "desktop", "Chrome", "Chrome OS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/18.1 Mobile/15E148 Safari/604.1", "mobile", "Safari", "iOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1", "mobile", "Chrome", "iOS"),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Mobile Safari/537.36", "mobile", "Chrome", "Android"),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", "mobile", "Samsung Internet",
     "Android"),
    ("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0", "mobile",
     "Firefox", "Android"),
    ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/16.6 Mobile/15E148 Safari/604.1", "tablet", "Safari", "iOS"),
    ("Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", "tablet", "Chrome", "Android"),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot",
     "Googlebot", "unknown"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bot", "bingbot",
     "unknown"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
     "+https://openai.com/gptbot)", "bot", "GPTBot", "unknown"),
    ("curl/8.5.0", "bot", "curl", "unknown"),
    ("python-requests/2.32.3", "bot", "Python Requests", "unknown"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/131.0.0.0 Safari/537.36", "bot", "HeadlessChrome", "Linux"),
    ("something nobody knows", "unknown", "unknown", "unknown"),
]


@pytest.fixture(scope="module")
def detector() -> DeviceDetector:
    return DeviceDetector()


@pytest.mark.parametrize("ua, device, browser, os_name", CASES)
def test_user_agents_give_device_class_browser_and_os(detector, ua, device, browser, os_name):
    c = detector.detect(ua)
    assert (c.device, c.browser, c.os) == (device, browser, os_name)


def test_the_accelerator_is_installed_and_the_pure_python_resolver_agrees(detector):
    assert resolver_name() == "regex"  # ua-parser[regex]: ua-parser-rs from a wheel
    basic = DeviceDetector(ua_parser.Parser(ua_parser.BasicResolver(ua_parser.load_builtins())))
    assert [basic.detect(ua) for ua, *_ in CASES] == [detector.detect(ua) for ua, *_ in CASES]


def test_what_the_page_knows_corrects_the_user_agent(detector):
    ipad_as_mac = CASES[1][0]  # iPadOS sends a Mac's user agent by default
    assert detector.classify(ipad_as_mac).device == "desktop"
    assert detector.classify(ipad_as_mac, screen_class="tablet").device == "tablet"
    assert detector.classify(ipad_as_mac, mobile=True).device == "mobile"
    assert detector.classify(CASES[0][0], screen_class="nonsense").device == "desktop"
    # a bot stays a bot whatever it claims; a sender may say it is one
    assert detector.classify("curl/8.5.0", screen_class="mobile").device == "bot"
    assert detector.classify(CASES[0][0], synthetic="test").device == "bot"
    assert detector.classify(None, screen_class="mobile").device == "mobile"


def test_results_are_cached_per_user_agent(detector):
    ua = CASES[5][0]
    detector.detect(ua)
    hits = detector.detect.cache_info().hits
    detector.detect(ua)
    assert detector.detect.cache_info().hits == hits + 1
