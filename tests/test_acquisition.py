"""Where visits come from: referrer hosts and UTM parameters to source, medium and campaign,
with Matomo's public-domain lists and the config's own sources."""

from __future__ import annotations

from importlib import resources

import pytest

from exporter.acquisition import Acquisition, SourceRule
from exporter.acquisition.referrers import ReferrerTable, builtin_entries, normalize_host

PAGE = "https://shop.example.com/landing"


@pytest.fixture(scope="module")
def acquisition() -> Acquisition:
    return Acquisition()


@pytest.mark.parametrize("referrer, query, want", [
    ("https://www.google.com/search?q=x", None, ("Google", "search", "(none)")),
    ("https://www.google.co.uk/", None, ("Google", "search", "(none)")),
    ("https://www.google.de/url?q=1", None, ("Google", "search", "(none)")),
    ("https://cn.bing.com/search?q=1", None, ("Bing", "search", "(none)")),
    ("https://duckduckgo.com/", None, ("DuckDuckGo", "search", "(none)")),
    ("https://news.ycombinator.com/", None, ("Hacker News", "social", "(none)")),
    ("https://t.co/abc", None, ("Twitter", "social", "(none)")),
    ("https://l.facebook.com/l.php?u=x", None, ("Facebook", "social", "(none)")),
    ("https://www.facebook.com/", None, ("Facebook", "social", "(none)")),  # not search
    ("https://www.linkedin.com/feed/", None, ("LinkedIn", "social", "(none)")),
    ("https://github.com/foo/bar", None, ("GitHub", "social", "(none)")),
    ("https://www.reddit.com/r/x", None, ("Reddit", "social", "(none)")),
    ("https://chatgpt.com/", None, ("ChatGPT", "ai", "(none)")),  # not search
    ("https://gemini.google.com/app", None, ("Gemini", "ai", "(none)")),  # not Google search
    ("https://x.com/i/grok", None, ("Grok", "ai", "(none)")),
    ("https://x.com/someone", None, ("Twitter", "social", "(none)")),
    ("https://mail.google.com/mail/u/0/", None, ("Gmail", "email", "(none)")),
    ("android-app://com.google.android.gm/", None, ("Gmail", "email", "(none)")),
    ("android-app://com.google.android.googlequicksearchbox/", None,
     ("Google", "search", "(none)")),
    ("android-app://org.example.reader/", None,
     ("android-app://org.example.reader", "referral", "(none)")),
    ("https://blog.example.org/post", None, ("blog.example.org", "referral", "(none)")),
    ("https://www.blog.example.org:8443/post", None, ("blog.example.org", "referral", "(none)")),
    (None, None, ("Direct / None", "(none)", "(none)")),
    ("", None, ("Direct / None", "(none)", "(none)")),
    ("not a url", None, ("Direct / None", "(none)", "(none)")),
    ("ftp://files.example.org/", None, ("Direct / None", "(none)", "(none)")),
    (None, "utm_source=newsletter&utm_medium=Email", ("newsletter", "email", "(none)")),
    (None, "utm_source=google&utm_medium=cpc&utm_campaign=spring",
     ("Google", "cpc", "spring")),
    (None, "utm_source=fb&utm_medium=paid_social", ("Facebook", "paid_social", "(none)")),
    (None, "utm_source=HACKERNEWS", ("Hacker News", "social", "(none)")),
    (None, "utm_source=somewhere", ("somewhere", "(not set)", "(none)")),
    (None, "ref=producthunt", ("producthunt", "(not set)", "(none)")),
    ("https://www.google.com/", "gclid=abc", ("Google", "cpc", "(none)")),
    ("https://www.bing.com/", "msclkid=abc", ("Bing", "cpc", "(none)")),
    ("https://news.ycombinator.com/", "utm_source=twitter", ("Twitter", "social", "(none)")),
    ("https://news.ycombinator.com/", "utm_campaign=launch",
     ("Hacker News", "social", "launch")),
])
def test_referrers_and_utm_give_source_medium_and_campaign(acquisition, referrer, query, want):
    assert acquisition.classify(referrer, PAGE, query) == want


def test_the_query_of_the_page_url_is_read_when_no_query_is_given(acquisition):
    assert acquisition.classify(None, PAGE + "?utm_source=bing&utm_medium=cpc#top", None) == \
        ("Bing", "cpc", "(none)")
    # utm attributes win over the URL's
    assert acquisition.classify(None, PAGE + "?utm_source=bing", None, "newsletter", "email",
                                "may") == ("newsletter", "email", "may")


def test_internal_referrers_say_nothing_about_where_a_visit_came_from():
    a = Acquisition(internal_hosts=["shop-cdn.example.com"])
    # the page's own host (www. or not), the configured hosts and localhost: no attribution
    assert a.classify("https://www.shop.example.com/cart", PAGE, None) is None
    assert a.classify("https://shop-cdn.example.com/x", PAGE, None) is None
    assert a.classify("http://localhost:3000/", PAGE, None) is None
    # unless the page carries UTM parameters: a campaign link on the site itself
    assert a.classify("https://shop.example.com/", PAGE, "utm_source=banner") == \
        ("banner", "(not set)", "(none)")
    # another host is a referrer
    assert a.classify("https://shop.example.org/", PAGE, None) == \
        ("shop.example.org", "referral", "(none)")


def test_configured_sources_win_over_the_lists():
    a = Acquisition(rules=[
        SourceRule("Example News", "referral", host="news.example.org"),
        SourceRule("Our Google", "partner", host="google.com"),
        SourceRule("Newsletter", "email", utm_source="spring-mailing"),
    ])
    assert a.classify("https://eu.news.example.org/a", PAGE, None) == \
        ("Example News", "referral", "(none)")
    assert a.classify("https://www.google.com/", PAGE, None) == \
        ("Our Google", "partner", "(none)")
    assert a.classify("https://www.google.fr/", PAGE, None) == ("Google", "search", "(none)")
    assert a.classify(None, PAGE, "utm_source=Spring-Mailing") == \
        ("Newsletter", "email", "(none)")
    assert a.classify(None, PAGE, "utm_source=example%20news") == \
        ("Example News", "referral", "(none)")


def test_lookup_is_most_specific_first_and_understands_matomo_placeholders():
    t = ReferrerTable([("google.{}", "Google", "search"), ("{}.bing.com", "Bing", "search"),
                       ("maps.google.com", "Maps", "search"), ("x.com/i/grok", "Grok", "ai"),
                       ("x.com", "X", "social")])
    assert t.lookup("maps.google.com").name == "Maps"
    assert t.lookup("images.google.com.br").name == "Google"
    assert t.lookup("google.co.uk").name == "Google"
    assert t.lookup("google.notatld.example") is None
    assert t.lookup("de.bing.com").name == "Bing"
    assert t.lookup("x.com", "/i/grok/chat").name == "Grok"
    assert t.lookup("x.com", "/home").name == "X"
    assert t.lookup("example.org") is None
    assert normalize_host("WWW.Example.ORG:443") == "example.org"


def test_matomo_lists_are_vendored_with_their_license():
    data = resources.files("exporter.acquisition").joinpath("lists")
    names = {p.name for p in data.iterdir()}
    assert {"SearchEngines.yml", "Socials.yml", "AIAssistants.yml", "LICENSE",
            "README.md"} <= names
    assert "CC0 1.0 Universal" in data.joinpath("LICENSE").read_text()
    assert "3b3a82dc83cd146abe17aafe31254de1c25f7844" in data.joinpath("README.md").read_text()
    entries = builtin_entries()
    mediums = {m for _, _, m in entries}
    assert mediums == {"search", "social", "email", "ai"}
    assert len(entries) > 800
