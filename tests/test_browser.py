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
from tests.helpers import ROOT, Scrape, free_port

EXAMPLE = ROOT / "examples" / "browser"
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

    def open(self, url: str) -> str:
        """Opens ``url`` in a new tab with network events on; returns the tab's session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        self.send("Network.enable", session=session)
        self.send("Page.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
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
