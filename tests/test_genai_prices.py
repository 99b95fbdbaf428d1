"""The price book: genai-prices' own figures split by token type, the genai.prices overrides,
unpriced usage, metric points, and cost counters across reloads and restarts."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from exporter.config import ConfigError, load_config
from exporter.genai import GenAIConfig, PriceBook, PriceOverride, UnpricedTokens
from exporter.mapper import Priced
from exporter.records import (
    METRIC, SPAN, TEMPORALITY_CUMULATIVE, TEMPORALITY_DELTA, Batch, Histogram, Record,
)
from tests.helpers import built

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)
WHEN_NS = int(WHEN.timestamp() * 1e9)
TOKEN_BOUNDS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
                1048576.0, 4194304.0, 16777216.0, 67108864.0)


def span(model: str, provider: str = "openai", *, response: str | None = None,
         input: int | None = None, output: int | None = None, cache_read: int | None = None,
         cache_write: int | None = None, **extra: Any) -> Record:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
                             "gen_ai.request.model": model, **extra}
    for key, value in (("gen_ai.response.model", response),
                       ("gen_ai.usage.input_tokens", input),
                       ("gen_ai.usage.output_tokens", output),
                       ("gen_ai.usage.cache_read.input_tokens", cache_read),
                       ("gen_ai.usage.cache_creation.input_tokens", cache_write)):
        if value is not None:
            attrs[key] = value
    return Record(SPAN, f"chat {model}", WHEN_NS, attrs, duration=0.5)


def point(model: str, token_type: str, tokens: float, temporality: int = TEMPORALITY_DELTA,
          start_ns: int = 0, provider: str = "openai") -> Record:
    return Record(METRIC, "gen_ai.client.token.usage", WHEN_NS, {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
        "gen_ai.request.model": model, "gen_ai.token.type": token_type},
        value=Histogram(TOKEN_BOUNDS, (0,) * len(TOKEN_BOUNDS) + (1,), tokens, 1),
        point_kind="histogram",
        temporality=temporality, start_ns=start_ns)


def reference(usage: Usage, model: str, provider: str) -> Any:
    return calc_price(usage, model, provider_id=provider, genai_request_timestamp=WHEN)


# ---- spans: genai-prices' answer, split by part --------------------------------------------

@pytest.mark.parametrize("model,provider,usage,parts", [
    # cache reads at the cached rate
    ("gpt-4o", "openai", dict(input=1000, cache_read=200, output=500),
     {"input", "cache_read", "output"}),
    # a dated name, matched by genai-prices
    ("gpt-4o-2024-08-06", "openai", dict(input=21, output=7), {"input", "output"}),
    # cache writes (Anthropic), the provider as the conventions name it
    ("claude-sonnet-4-20250514", "anthropic", dict(input=4740, cache_write=4735, output=255),
     {"input", "cache_write", "output"}),
    # long-context tiers: over 200k input tokens every token is charged at the tier price
    ("gemini-2.5-pro", "gcp.gemini", dict(input=300_000, cache_read=100_000, output=1000),
     {"input", "cache_read", "output"}),
    # a per-request fee
    ("sonar", "perplexity", dict(input=1000, output=100), {"input", "output", "request"}),
    # embeddings: input only
    ("text-embedding-3-small", "openai", dict(input=5), {"input"}),
])
def test_a_span_costs_what_genai_prices_says(model, provider, usage, parts):
    book = PriceBook(GenAIConfig())
    record = span(model, provider, **usage)
    got = book.span_parts(record)
    assert got is not None and set(got) == parts
    ref = reference(Usage(input_tokens=usage["input"], output_tokens=usage.get("output"),
                          cache_read_tokens=usage.get("cache_read"),
                          cache_write_tokens=usage.get("cache_write")),
                    model, {"gcp.gemini": "google"}.get(provider, provider))
    assert sum(got.values()) == pytest.approx(float(ref.total_price), rel=1e-12)
    assert got.get("output", 0) == pytest.approx(float(ref.output_price), rel=1e-12)
    assert got["input"] + got.get("cache_read", 0) + got.get("cache_write", 0) == \
        pytest.approx(float(ref.input_price), rel=1e-12)
    # each part through the mapper's interface, the span priced once
    for part, usd in got.items():
        assert book.span_cost(record, part) == usd
    assert book.span_cost(record, "cache_write" if "cache_write" not in parts else "nope") \
        is None


def test_worked_figures_of_the_docs():
    book = PriceBook(GenAIConfig())
    got = book.span_parts(span("gpt-4o", input=1000, cache_read=200, output=500))
    # 800 x $2.50 + 200 x $1.25 per million, 500 x $10 per million
    assert got == pytest.approx({"input": 0.002, "cache_read": 0.00025, "output": 0.005})


def test_a_span_without_token_usage_costs_nothing_and_is_not_unpriced():
    book = PriceBook(GenAIConfig())
    assert book.span_parts(span("gpt-4o")) is None
    assert book.unpriced.snapshot() == ({}, 0.0)


def test_unknown_models_are_never_priced_and_their_tokens_are_counted():
    unpriced = UnpricedTokens()
    book = PriceBook(GenAIConfig(), unpriced)
    record = span("acme-llm-7b", "self-hosted", input=100, output=20)
    for part in ("input", "output"):  # two cost rules, one record: counted once
        assert book.span_cost(record, part) is None
    assert book.span_parts(span("gpt-4o", "openai", input=10, cache_read=20)) is None  # inconsistent
    assert unpriced.snapshot() == ({(SPAN, "acme-llm-7b"): 120.0, (SPAN, "gpt-4o"): 10.0}, 0.0)


def test_providers_the_database_names_differently_and_unknown_ones():
    book = PriceBook(GenAIConfig())
    # x_ai is the conventions' value, x-ai genai-prices' id
    assert book.span_parts(span("grok-3", "x_ai", input=1000, output=10)) is not None
    # a provider the database does not know: the model name alone decides
    assert book.span_parts(span("gpt-4o", "my-gateway", input=1000, output=10)) == \
        book.span_parts(span("gpt-4o", "openai", input=1000, output=10))
    # the deprecated gen_ai.system names the provider too
    legacy = Record(SPAN, "chat", WHEN_NS, {"gen_ai.system": "openai",
                                            "gen_ai.request.model": "gpt-4o",
                                            "gen_ai.usage.input_tokens": 1000})
    assert book.span_parts(legacy) == pytest.approx({"input": 0.0025})


def test_the_response_model_is_priced_first():
    book = PriceBook(GenAIConfig())
    # gpt-4o-2024-05-13 costs more than today's gpt-4o alias
    old = book.span_parts(span("gpt-4o", input=1000, output=1000, response="gpt-4o-2024-05-13"))
    new = book.span_parts(span("gpt-4o", input=1000, output=1000))
    ref = reference(Usage(input_tokens=1000, output_tokens=1000), "gpt-4o-2024-05-13", "openai")
    assert old is not None and new is not None
    assert sum(old.values()) == pytest.approx(float(ref.total_price))
    assert sum(old.values()) > sum(new.values())


def test_overrides_win_and_add_models():
    book = PriceBook(GenAIConfig(prices=(
        PriceOverride("gpt-4o", "openai", 2.0, 8.0, cache_read_per_mtok=0.5),
        PriceOverride("ft:acme-support", None, 1.0, 4.0),
    )))
    assert book.span_parts(span("gpt-4o", input=1_000_000, cache_read=400_000,
                                output=1_000_000)) == pytest.approx(
        {"input": 1.2, "cache_read": 0.2, "output": 8.0})
    # no cache price: cached tokens at the input price; any provider
    assert book.span_parts(span("FT:ACME-SUPPORT", "azure.ai.openai", input=1_000_000,
                                cache_read=500_000, cache_write=100_000,
                                output=2_000_000)) == pytest.approx(
        {"input": 0.4, "cache_read": 0.5, "cache_write": 0.1, "output": 8.0})
    # an override for another provider does not apply
    other = PriceBook(GenAIConfig(prices=(PriceOverride("gpt-4o", "azure.ai.openai", 2.0, 8.0),)))
    assert other.span_parts(span("gpt-4o", input=1_000_000)) == pytest.approx({"input": 2.5})


def test_an_override_of_the_requested_model_wins_over_the_database_price_of_the_answer():
    # OpenAI answers gpt-4o calls as gpt-4o-2024-08-06, which the database prices; the
    # price set for gpt-4o in the config is the one that applies
    book = PriceBook(GenAIConfig(prices=(PriceOverride("gpt-4o", "openai", 1.0, 2.0),)))
    record = span("gpt-4o", response="gpt-4o-2024-08-06", input=1_000_000, output=1_000_000)
    assert book.span_parts(record) == pytest.approx({"input": 1.0, "output": 2.0})
    point_record = point("gpt-4o", "output", 1_000_000)
    point_record.attributes["gen_ai.response.model"] = "gpt-4o-2024-08-06"
    assert book.point_price(point_record).usd == pytest.approx(2.0)
    # an override of the dated name wins over one of the requested name
    both = PriceBook(GenAIConfig(prices=(PriceOverride("gpt-4o", None, 1.0, 2.0),
                                         PriceOverride("gpt-4o-2024-08-06", None, 3.0, 4.0))))
    assert both.span_parts(record) == pytest.approx({"input": 3.0, "output": 4.0})


def test_the_builtin_database_can_be_turned_off():
    book = PriceBook(GenAIConfig(builtin_prices=False,
                                 prices=(PriceOverride("mine", None, 1.0, 1.0),)))
    assert book.span_parts(span("gpt-4o", input=100)) is None
    assert book.span_parts(span("mine", input=1_000_000)) == pytest.approx({"input": 1.0})


def test_pricing_never_touches_the_network(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("network access while pricing")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    book = PriceBook(GenAIConfig())
    for model in ("gpt-4o", "claude-3-5-haiku", "gemini-2.0-flash", "never-heard-of-it"):
        book.span_parts(span(model, "openai", input=10, output=10))
        book.point_price(point(model, "input", 10))


# ---- metric points ---------------------------------------------------------------------------

def test_points_are_priced_at_the_base_rate_of_their_token_type():
    book = PriceBook(GenAIConfig())
    got = book.point_price(point("gpt-4o", "input", 168))
    assert isinstance(got, Priced)
    assert got.tokens == 168 and got.usd == pytest.approx(168 * 2.5e-6)
    assert book.point_price(point("gpt-4o", "output", 56)).usd == pytest.approx(56 * 10e-6)
    # long-context tiers need one call's input size, which an aggregate point has not
    tiered = book.point_price(point("gemini-2.5-pro", "input", 1_000_000, provider="gcp.gemini"))
    assert tiered.usd == pytest.approx(1.25)
    # not a token type that has a price
    assert book.point_price(point("gpt-4o", "cache_read", 10)) is None


def test_unpriced_cumulative_points_count_their_increase():
    unpriced = UnpricedTokens()
    book = PriceBook(GenAIConfig(), unpriced)
    start = time.time_ns() + 1  # a stream that started after the exporter
    for total in (100, 250, 250, 40):  # the last one is a reset
        assert book.point_price(point("acme", "input", total, TEMPORALITY_CUMULATIVE,
                                      start_ns=start if total != 40 else start + 1)) is None
    assert unpriced.snapshot() == ({(METRIC, "acme"): 290.0}, 0.0)
    book.point_price(point("acme", "input", 5))  # delta
    assert unpriced.snapshot()[0][(METRIC, "acme")] == 295.0


def test_unpriced_tokens_stay_under_the_series_cap():
    unpriced = UnpricedTokens(max_series=3)
    book = PriceBook(GenAIConfig(), unpriced)
    for i in range(5):
        book.span_parts(span(f"model-{i}", "nobody", input=10))
    counts, overflow = unpriced.snapshot()
    assert len(counts) == 2 and overflow == 30.0


def test_unpriced_model_names_are_cut_like_label_values_and_not_cached():
    unpriced = UnpricedTokens(max_label_length=16)
    book = PriceBook(GenAIConfig(), unpriced)
    for i in range(3):
        book.span_parts(span(f"m{i}-" + "x" * 100_000, "nobody", input=10))
    counts, _ = unpriced.snapshot()
    assert counts == {(SPAN, "m0-xxxxxxxxxxxxx"): 10.0, (SPAN, "m1-xxxxxxxxxxxxx"): 10.0,
                      (SPAN, "m2-xxxxxxxxxxxxx"): 10.0}
    assert all(len(provider) + len(model) <= 256 for provider, model in book._found)
    # a reload may change the length
    unpriced.max_label_length = 4
    book.span_parts(span("abcdefgh", "nobody", input=1))
    assert unpriced.snapshot()[0][(SPAN, "abcd")] == 1.0


# ---- through the exporter: counters, reloads, restarts ---------------------------------------

def _cost(app: Any, metric: str = "gen_ai_client_cost_usd_total") -> float:
    state = app.store.metrics[metric]
    return sum(state.series.values())


def _cumulative_points(start_ns: int, tokens: float) -> Batch:
    batch = Batch(METRIC)
    p = point("gpt-4o", "input", tokens, TEMPORALITY_CUMULATIVE, start_ns=start_ns)
    p.attributes["service.name"] = "chat-app"
    p.time_ns = time.time_ns()
    batch.records.append(p)
    return batch


def test_a_price_change_at_reload_prices_only_new_tokens(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("genai:\n  prices:\n    - {model: gpt-4o, input_per_mtok: 1, "
                      "output_per_mtok: 1}\n")
    app = built(tmp_path, config.read_text())
    app.config_path = str(config)  # reload reads the file
    start = time.time_ns()
    app.pipeline.ingest_batch(_cumulative_points(start, 1_000_000))
    assert _cost(app) == pytest.approx(1.0)
    # a cheaper price: a cumulative stream whose USD would go down is not a reset
    config.write_text("genai:\n  prices:\n    - {model: gpt-4o, input_per_mtok: 0.5, "
                      "output_per_mtok: 1}\n")
    ok, message = app.reload()
    assert ok, message
    app.pipeline.ingest_batch(_cumulative_points(start, 3_000_000))
    assert _cost(app) == pytest.approx(1.0 + 2 * 0.5)
    app.stop()


def test_cost_counters_and_streams_survive_a_restart(tmp_path: Path):
    text = "genai:\n  prices:\n    - {model: gpt-4o, input_per_mtok: 2, output_per_mtok: 8}\n"
    app = built(tmp_path, text)
    start = time.time_ns()
    app.pipeline.ingest_batch(_cumulative_points(start, 1_000_000))
    assert app.state is not None
    app.stop()  # saves the state
    again = built(tmp_path, text)
    assert _cost(again) == pytest.approx(2.0)
    again.pipeline.ingest_batch(_cumulative_points(start, 1_500_000))
    assert _cost(again) == pytest.approx(3.0)
    again.stop()


# ---- the genai config section --------------------------------------------------------------

def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(str(path), env={})


def test_the_genai_section_is_read(tmp_path: Path):
    cfg = _load(tmp_path, """
genai:
  builtin_prices: false
  prices:
    - model: ft:gpt-4o-mini:acme
      provider: openai
      input_per_mtok: 0.3
      output_per_mtok: 1.2
      cache_read_per_mtok: 0.15
    - {model: local-llama, input_per_mtok: 0, output_per_mtok: 0}
""")
    assert cfg.genai == GenAIConfig(False, (
        PriceOverride("ft:gpt-4o-mini:acme", "openai", 0.3, 1.2, 0.15, None),
        PriceOverride("local-llama", None, 0.0, 0.0)))


@pytest.mark.parametrize("text,problem", [
    ("genai: [1]", "genai: expected a mapping"),
    ("genai:\n  prise: []", "unknown key 'prise'; did you mean 'prices'?"),
    ("genai:\n  builtin_prices: yes please", "builtin_prices: expected true or false"),
    ("genai:\n  prices: {model: x}", "c.yaml:2: genai.prices: expected a list"),
    ("genai:\n  prices:\n    - gpt-4o", "genai.prices[0]: expected a mapping"),
    ("genai:\n  prices:\n    - {input_per_mtok: 1, output_per_mtok: 1}",
     "c.yaml:3: genai.prices[0]: 'model' is required: the model name"),
    ("genai:\n  prices:\n    - {model: m, input_per_mtok: -1, output_per_mtok: 1}",
     "c.yaml:3: genai.prices[0].input_per_mtok: expected USD per million tokens"),
    ("genai:\n  prices:\n    - {model: m, input_per_mtok: '2.5', output_per_mtok: 1}",
     "genai.prices[0].input_per_mtok: expected USD per million tokens as a number"),
    ("genai:\n  prices:\n    - {model: m, input_per_mtok: 1}",
     "genai.prices[0]: 'output_per_mtok' is required: USD per million tokens"),
    ("genai:\n  prices:\n    - {model: m, input_per_mtok: 1, output_per_mtok: true}",
     "genai.prices[0].output_per_mtok: expected USD per million tokens"),
    ("genai:\n  prices:\n    - {model: m, input_per_mtok: 1, output_per_mtok: .nan}",
     "genai.prices[0].output_per_mtok: expected USD per million tokens"),
    ("genai:\n  prices:\n    - {model: m, input_per_mtok: 1" + "0" * 400 + ", output_per_mtok: 1}",
     "genai.prices[0].input_per_mtok: expected USD per million tokens"),
    ("genai:\n  prices:\n    - {model: m, provider: '', input_per_mtok: 1, output_per_mtok: 1}",
     "genai.prices[0].provider: expected a provider name"),
    ("genai:\n  prices:\n    - {model: m, input_per_mtok: 1, output_per_mtok: 1, cache: 1}",
     "genai.prices[0]: unknown key 'cache'"),
    ("genai:\n  prices:\n    - {model: M, input_per_mtok: 1, output_per_mtok: 1}\n"
     "    - {model: m, input_per_mtok: 2, output_per_mtok: 2}",
     "c.yaml:4: genai.prices[1]: model 'm' is priced twice (also genai.prices[0])"),
])
def test_the_genai_section_refuses_mistakes(tmp_path: Path, text: str, problem: str):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_the_fast_path_equals_genai_prices_over_its_whole_database():
    """Every model price of the bundled database, with and without cached tokens, over and
    under the long-context tiers: the hand-written float arithmetic gives genai-prices'
    Decimal answer, or declines (and the library prices it)."""
    from genai_prices import data_snapshot
    from exporter.genai.prices import SpanUsage, fast_parts

    usages = [SpanUsage(1000, 500), SpanUsage(1000, 500, cache_read=300),
              SpanUsage(1000, 0, cache_write=400), SpanUsage(300_000, 2000, 100_000, 50_000),
              SpanUsage(5, 0)]
    checked = declined = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            mp = model.get_prices(WHEN)
            for u in usages:
                fast = fast_parts(mp, u)
                if fast is None:
                    declined += 1
                    continue
                try:
                    ref = mp.calc_price(Usage(input_tokens=u.input, output_tokens=u.output,
                                              cache_read_tokens=u.cache_read or None,
                                              cache_write_tokens=u.cache_write or None))
                except ValueError:
                    continue  # usage this model cannot have (its price says so)
                assert sum(fast.values()) == pytest.approx(float(ref["total_price"]),
                                                           rel=1e-12, abs=1e-15), (model.id, u)
                assert fast.get("output", 0) == pytest.approx(float(ref["output_price"]),
                                                              rel=1e-12, abs=1e-15)
                checked += 1
    assert checked > 10_000 and declined < checked / 50, (checked, declined)
