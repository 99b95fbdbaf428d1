"""The browser path in real headless Chromium: examples/browser/ sends OTLP/HTTP JSON with
fetch() to a running exporter across origins, and CORS lets exactly the allowed origins in.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: commands on
fd 3, replies on fd 4, NUL-separated JSON), so no WebDriver or WebSocket package is needed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from exporter.records import Record
from tests.helpers import ROOT, Scrape, eventually, free_port

EXAMPLE = ROOT / "examples" / "browser"
# What the tabs present themselves as: a desktop Chrome (headless Chromium's own user agent
# says HeadlessChrome, which the exporter counts as a bot).
DESKTOP_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36")
PHONE_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.6778.81 Mobile Safari/537.36")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-extensions",
                  "--remote-debugging-pipe"]


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed: run scripts/install-system-deps.sh "
                    "(apt-get install chromium)")
    return found


class CDPError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium and a minimal DevTools-protocol client over its pipe."""

    def __init__(self, profile: Path):
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        self.log_path = profile.parent / "chromium.log"
        self._log = open(self.log_path, "wb")
        # Chromium wants the pipe on fds 3 and 4; bash moves our two pipe ends there.
        script = (f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} '
                  f'{to_chrome_r}<&- {from_chrome_w}>&-')
        self.proc = subprocess.Popen(
            ["bash", "-c", script, "bash", chromium_binary(), *CHROMIUM_FLAGS,
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._out = to_chrome_w
        self._in = from_chrome_r
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._cond:
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30) -> dict[str, Any]:
        """Sends one command and returns its result; raises CDPError on an error reply."""
        with self._cond:
            self._next_id += 1
            msg_id = self._next_id
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self._replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise CDPError(f"no reply to {method} ({'browser exited' if self._closed else 'timeout'})"
                                   f"; log:\n{self.log_path.read_text(errors='replace')[-3000:]}")
                self._cond.wait(remaining)
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout: float = 30
                   ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events:
                    if match(ev):
                        return ev
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise CDPError("event not seen; got: "
                                   + ", ".join(e.get("method", "?") for e in self.events[-30:]))
                self._cond.wait(remaining)

    def events_of(self, session: str, method: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e["params"] for e in self.events
                    if e.get("sessionId") == session and e.get("method") == method]

    def open(self, url: str, user_agent: str | None = DESKTOP_UA, referrer: str = "",
             width: int = 1280) -> str:
        """Opens ``url`` in a new tab with network events on; returns the tab's session id.
        ``user_agent`` None keeps headless Chromium's own; ``width`` is the window's CSS
        width; ``referrer`` the page's document.referrer."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        self.send("Network.enable", session=session)
        self.send("Page.enable", session=session)
        if user_agent:
            self.send("Network.setUserAgentOverride", {"userAgent": user_agent},
                      session=session)
        self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 576},
            session=session)
        params = {"url": url, **({"referrer": referrer} if referrer else {})}
        self.send("Page.navigate", params, session=session)
        self.wait_event(lambda e: e.get("sessionId") == session
                        and e.get("method") == "Page.loadEventFired")
        return str(session)

    def evaluate(self, session: str, expression: str, timeout: float = 30) -> Any:
        """Runs JavaScript in the tab, awaiting a promise; returns the value as JSON."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=session,
                           timeout=timeout)
        if "exceptionDetails" in result:
            raise CDPError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except CDPError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticSite:
    """examples/browser/ served on its own loopback port: one web origin."""

    def __init__(self) -> None:
        handler = functools.partial(_QuietHandler, directory=str(EXAMPLE))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    profile = Path(tempfile.mkdtemp(prefix="kpi-chromium-"))
    b = Chromium(profile / "profile")
    try:
        b.send("Browser.getVersion")
        yield b
    finally:
        b.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def sites() -> Iterator[tuple[StaticSite, StaticSite]]:
    allowed, other = StaticSite(), StaticSite()
    yield allowed, other
    allowed.close()
    other.close()


def web_samples(s: Scrape) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {k: v for k, v in s.samples.items()
            if k[0].startswith("app_") and ("service_name", "web-example") in k[1]}


# Clicks through the example page the way a person would, then sends what is queued.
CLICK_THROUGH = """
(async () => {
  const click = (sel) => document.querySelector(sel).click();
  click('#login');
  click('nav button[data-route="/workouts"]');
  click('[data-feature="workout"][data-action="create"]');
  click('[data-feature="workout"][data-action="create"]');
  click('[data-feature="workout"][data-action="share"]');
  click('nav button[data-route="/nutrition"]');
  click('[data-feature="nutrition"][data-action="view"]');
  click('#subscribe');
  const delivered = await window.analytics.flush();
  return { delivered, stats: { ...window.analytics.stats }, identity: window.analytics.identity };
})()
"""


def test_page_events_arrive_from_an_allowed_origin(browser, exporter_factory, sites):
    allowed, _ = sites
    exporter = exporter_factory(
        f"server:\n  cors:\n    allowed_origins: ['{allowed.origin}']\n")
    records: list[Record] = []
    exporter.pipeline.add_observer(lambda batch: records.extend(batch.records))

    tab = browser.open(f"{allowed.origin}/index.html?endpoint={exporter.otlp_url}")
    out = browser.evaluate(tab, CLICK_THROUGH)
    assert out["delivered"] is True, out
    assert out["stats"]["sent"] == 8 and out["stats"]["queued"] == 0, out

    svc = {"service_name": "web-example"}
    expected = {
        ("app_page_views_total", frozenset({"route": "/", **svc}.items())): 1,
        ("app_page_views_total", frozenset({"route": "/workouts", **svc}.items())): 1,
        ("app_page_views_total", frozenset({"route": "/nutrition", **svc}.items())): 1,
        ("app_feature_usage_total", frozenset({"feature": "workout", "action": "create",
                                               **svc}.items())): 2,
        ("app_feature_usage_total", frozenset({"feature": "workout", "action": "share",
                                               **svc}.items())): 1,
        ("app_feature_usage_total", frozenset({"feature": "nutrition", "action": "view",
                                               **svc}.items())): 1,
        ("app_conversions_total", frozenset({"type": "subscribe", **svc}.items())): 1,
        ("app_conversion_value_total", frozenset({"type": "subscribe", "currency": "USD",
                                                  **svc}.items())): 9.99,
        ("app_events_total", frozenset({"event": "app.page_view", **svc}.items())): 3,
        ("app_events_total", frozenset({"event": "app.feature_used", **svc}.items())): 4,
        ("app_events_total", frozenset({"event": "app.conversion", **svc}.items())): 1,
        # one visit, started: no referrer, a desktop Chrome
        ("app_sessions_started_total", frozenset({"source": "Direct / None", "medium": "(none)",
                                                  **svc}.items())): 1,
        ("app_sessions_started_by_client_total", frozenset({
            "device": "desktop", "browser": "Chrome", "os": "Windows", **svc}.items())): 1,
    }
    assert web_samples(exporter.scrape()) == pytest.approx(expected)
    assert set(web_samples(exporter.scrape())) == set(expected)

    # identities travel as attributes: the first page view was before the login
    session = out["identity"]["sessionId"]
    assert len(records) == 8
    assert all(r.attributes.get("session.id") == session for r in records)
    users = [r.attributes.get("user.id") for r in records]
    assert users.count("demo-user-1") == len(records) - 1 and users.count(None) == 1
    assert all(r.attributes.get("telemetry.sdk.language") == "webjs" for r in records)
    # the event time is the browser's clock, in nanoseconds
    assert all(abs(r.time_ns / 1e9 - time.time()) < 600 for r in records)

    # and the page's own status line says so
    browser.evaluate(tab, "document.querySelector('#flush').click()")
    status = ""
    for _ in range(50):
        status = browser.evaluate(tab, "document.getElementById('status').textContent")
        if status.startswith("queued 0, sent 8"):
            break
        time.sleep(0.1)
    assert status.startswith("queued 0, sent 8, dropped 0, refused 0"), status


def test_preflight_from_a_disallowed_origin_is_refused(browser, exporter_factory, sites):
    allowed, other = sites
    exporter = exporter_factory(
        f"server:\n  cors:\n    allowed_origins: ['{allowed.origin}']\n")

    tab = browser.open(f"{other.origin}/index.html?endpoint={exporter.otlp_url}")
    out = browser.evaluate(tab, """
      (async () => {
        document.querySelector('#subscribe').click();
        const delivered = await window.analytics.flush();
        return { delivered, stats: { ...window.analytics.stats } };
      })()""")
    assert out["delivered"] is False
    stats = out["stats"]
    # nothing sent, nothing lost: both events wait for a retry
    assert (stats["sent"], stats["queued"], stats["dropped"], stats["rejected"]) == (0, 2, 0, 0)
    assert "Failed to fetch" in stats["lastError"]

    failed = browser.wait_event(
        lambda e: e.get("sessionId") == tab and e.get("method") == "Network.loadingFailed"
        and "corsErrorStatus" in e.get("params", {}))
    cors = failed["params"]["corsErrorStatus"]["corsError"]
    assert cors.startswith("Preflight"), failed
    sent = [e for e in browser.events_of(tab, "Network.requestWillBeSent")
            if e["request"]["url"] == exporter.otlp_url + "/v1/logs"]
    assert sent and failed["params"]["requestId"] in {e["requestId"] for e in sent}
    # the exporter never counted anything from that origin
    assert web_samples(exporter.scrape()) == {}
    assert exporter.scrape().value("kpi_exporter_records_received_total", signal="log") in (None, 0)


def test_page_keeps_events_while_the_exporter_is_down_and_sends_them_later(
        browser, process_factory, sites, tmp_path):
    allowed, _ = sites
    port = free_port()
    tab = browser.open(f"{allowed.origin}/index.html?endpoint=http://127.0.0.1:{port}")
    held = browser.evaluate(tab, """
      (async () => {
        document.querySelector('nav button[data-route="/profile"]').click();
        document.querySelector('[data-feature="profile"][data-action="edit"]').click();
        const delivered = await window.analytics.flush();
        return { delivered, stats: { ...window.analytics.stats } };
      })()""")
    assert held["delivered"] is False
    assert (held["stats"]["queued"], held["stats"]["sent"], held["stats"]["dropped"]) == (3, 0, 0)

    config = tmp_path / "cors.yaml"
    config.write_text(f"server:\n  cors:\n    allowed_origins: ['{allowed.origin}']\n")
    exporter = process_factory("--config", str(config), "--state-dir", str(tmp_path / "state"),
                               otlp_port=port)
    sent = browser.evaluate(tab, """
      (async () => {
        const delivered = await window.analytics.flush();
        return { delivered, stats: { ...window.analytics.stats } };
      })()""")
    assert sent["delivered"] is True and sent["stats"]["sent"] == 3, sent
    s = exporter.scrape()
    assert s.value("app_page_views_total", route="/", service_name="web-example") == 1
    assert s.value("app_page_views_total", route="/profile", service_name="web-example") == 1
    assert s.value("app_feature_usage_total", feature="profile", action="edit",
                   service_name="web-example") == 1


WEB_VISIT = """
(async () => {
  const click = (sel) => document.querySelector(sel).click();
  click('nav button[data-route="/workouts"]');
  click('[data-feature="workout"][data-action="create"]');
  click('nav button[data-route="/nutrition"]');
  window.analytics.endSession();
  const delivered = await window.analytics.flush();
  return { delivered, stats: { ...window.analytics.stats } };
})()
"""


def test_a_visit_from_a_campaign_on_a_phone_is_counted_when_the_page_ends_it(
        browser, exporter_factory, sites):
    allowed, _ = sites
    exporter = exporter_factory(
        f"server:\n  cors:\n    allowed_origins: ['{allowed.origin}']\n"
        f"web_analytics:\n  campaign_label: true\n")
    records: list[Record] = []
    exporter.pipeline.add_observer(lambda batch: records.extend(batch.records))
    tab = browser.open(f"{allowed.origin}/index.html?endpoint={exporter.otlp_url}"
                       f"&utm_source=newsletter&utm_medium=email&utm_campaign=spring"
                       f"&email=someone%40example.com",
                       user_agent=PHONE_UA, referrer="http://mail.google.com/mail/u/0/",
                       width=390)
    out = browser.evaluate(tab, WEB_VISIT)
    assert out["delivered"] is True and out["stats"]["sent"] == 5, out

    landing = records[0].attributes
    assert landing["url.full"] == f"{allowed.origin}/index.html"  # no query, no fragment
    # only the campaign parameters leave the page: not the endpoint, not the e-mail address
    assert landing["url.query"] == "utm_source=newsletter&utm_medium=email&utm_campaign=spring"
    # browsers pass on only the origin of a cross-origin referrer (the default policy)
    assert landing["app.referrer"] == "http://mail.google.com/"
    assert landing["app.screen.class"] == "mobile"
    assert all(r.attributes.get("user_agent.original") == PHONE_UA for r in records)
    assert [r.name for r in records][-1] == "app.session.end"
    assert len({r.attributes["session.id"] for r in records}) == 1
    # derived at ingest: utm_source beats the referrer; the device from the user agent
    assert (landing["app.acquisition.source"], landing["app.acquisition.medium"],
            landing["app.acquisition.campaign"]) == ("newsletter", "email", "spring")
    assert (landing["app.device.class"], landing["user_agent.name"],
            landing["user_agent.os.name"]) == ("mobile", "Chrome", "Android")

    svc = {"service_name": "web-example"}

    def closed() -> Scrape | None:
        s = exporter.scrape()
        return s if s.value("app_sessions_closed_total", source="newsletter", device="mobile",
                            country="unknown", **svc) == 1 else None
    s = eventually(closed, timeout=15)
    assert s, exporter.scrape().text
    assert s.value("app_sessions_started_total", source="newsletter", medium="email",
                   campaign="spring", **svc) == 1
    assert s.value("app_sessions_started_by_client_total", device="mobile", browser="Chrome",
                   os="Android", **svc) == 1
    labels = {"source": "newsletter", "device": "mobile", "country": "unknown", **svc}
    assert s.value("app_session_page_views_sum", **labels) == 3
    assert s.value("app_sessions_bounced_total", **labels) is None
    assert s.value("app_session_entries_total", route="/", **svc) == 1
    assert s.value("app_session_exits_total", route="/nutrition", **svc) == 1
    assert s.value("kpi_exporter_sessions_closed_total", reason="end") == 1


def test_headless_chromium_is_a_bot_and_no_visitor(browser, exporter_factory, sites):
    allowed, _ = sites
    exporter = exporter_factory(
        f"server:\n  cors:\n    allowed_origins: ['{allowed.origin}']\n")
    tab = browser.open(f"{allowed.origin}/index.html?endpoint={exporter.otlp_url}",
                       user_agent=None)
    out = browser.evaluate(tab, CLICK_THROUGH)
    assert out["delivered"] is True, out
    s = exporter.scrape()
    assert s.value("app_bot_events_total", bot="HeadlessChrome",
                   service_name="web-example") == 8
    assert not s.matching("app_page_views_total") and not s.matching("app_sessions_started_total")
    assert s.value("app_active_users", window="5m") == 0
    assert s.value("app_events_total", event="app.page_view", service_name="web-example") == 3


def test_a_session_idle_for_the_timeout_ends_and_a_new_one_starts(browser, exporter_factory,
                                                                   sites):
    allowed, _ = sites
    exporter = exporter_factory(
        f"server:\n  cors:\n    allowed_origins: ['{allowed.origin}']\n")
    records: list[Record] = []
    exporter.pipeline.add_observer(lambda batch: records.extend(batch.records))
    tab = browser.open(f"{allowed.origin}/index.html?endpoint={exporter.otlp_url}")
    out = browser.evaluate(tab, f"""
      (async () => {{
        const {{ createAnalytics }} = await import('./kpi-analytics.js');
        sessionStorage.clear();
        const a = createAnalytics({{ endpoint: '{exporter.otlp_url}', sessionTimeoutMs: 300,
                                    serviceName: 'idle-test' }});
        a.trackPageView('/one');
        const first = a.identity.sessionId;
        await new Promise((r) => setTimeout(r, 500));
        a.trackPageView('/two');
        const delivered = await a.flush();
        a.close();
        return {{ delivered, first, second: a.identity.sessionId }};
      }})()""")
    assert out["delivered"] and out["first"] != out["second"], out
    mine = [(r.name, r.attributes["session.id"]) for r in records
            if r.attributes.get("service.name") == "idle-test"]
    assert mine == [("app.page_view", out["first"]), ("app.session.end", out["first"]),
                    ("app.page_view", out["second"])]
