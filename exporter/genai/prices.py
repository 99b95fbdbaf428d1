"""What GenAI token usage costs: the ``genai.prices`` of the config first, then the price
database bundled with the pinned ``genai-prices`` package (offline: its background updater is
never started, so prices change only with the package version).

A span's usage is priced once (its input tokens including cache reads and writes, as the
GenAI conventions count them) and split into the parts the cost counters are labelled by:
uncached input, cache reads, cache writes, output, and per-request fees. The database's own
Decimal calculation takes about 100 us a span; for the model prices made of the token kinds
spans report (all but a handful), :func:`fast_parts` does the same arithmetic in floating
point in a few microseconds, held equal to the library's over the whole database by the
tests. A token usage metric point is an aggregate of many calls: its tokens
are priced at the base (not long-context) rate of its token type, and its input tokens at the
uncached input rate, since points say nothing about caching.

Usage of a model without a known price is never given a cost: its tokens are counted in
``kpi_exporter_gen_ai_unpriced_tokens_total{signal, model}``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterator

from genai_prices import Usage, data_snapshot
from genai_prices.data_units import unit_data
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices, calc_unit_price

from exporter.genai.config import GenAIConfig, PriceOverride
from exporter.mapper import Priced
from exporter.records import METRIC, SPAN, TEMPORALITY_CUMULATIVE, Histogram, Record

__all__ = ["PriceBook", "UnpricedTokens", "SpanUsage", "span_usage", "PARTS",
           "PROVIDER_IDS", "ATTRIBUTES"]

# The parts of a span's cost, as the gen_ai_token_type label of the cost counters names them.
PARTS = ("input", "cache_read", "cache_write", "output", "request")

PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT = "gen_ai.usage.input_tokens"
OUTPUT = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
# v1.41 of the conventions; the newer name replaces it.
CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens")
TOKEN_TYPE = "gen_ai.token.type"
SERVICE_TIER = ("openai.response.service_tier", "gen_ai.openai.response.service_tier")

# Every attribute the price book reads from a span.
ATTRIBUTES = frozenset((*PROVIDER, REQUEST_MODEL, RESPONSE_MODEL, INPUT, OUTPUT, CACHE_READ,
                        *CACHE_WRITE, TOKEN_TYPE, *SERVICE_TIER))

# gen_ai.provider.name values the price database knows under another id. The rest it
# matches itself (openai, azure.ai.openai, anthropic, aws.bedrock, gcp.gemini, ...); an
# unknown provider falls back to the model name alone.
PROVIDER_IDS = {"x_ai": "x-ai"}

_LOOKUP_CACHE = 4096
# Longer (provider + model) names are looked up every time rather than kept in the cache.
_CACHED_NAME_LENGTH = 256
_MTOK = 1_000_000
# Price keys the fast path computes (the token kinds spans report, and per-request fees), and
# those of usage spans never report, which add nothing: other modalities (audio, image,
# video), cache lifetimes, reasoning and tool tokens, characters, pages, searches. A model
# price with any other key (the text-modality ones, which split what spans report) is priced
# by genai-prices' own calculation.
_FAST_KEYS = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok",
                        "requests_kcount"})
_UNREPORTED_KEYS = frozenset(
    str(unit.get("price_key", usage_key)) for usage_key, unit in unit_data.items()
    if unit.get("dimensions", {}).get("modality") != "text") - _FAST_KEYS


def _tokens(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def _first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        v = attrs.get(key)
        if v is not None and v != "":
            return v
    return None


@dataclass(frozen=True)
class SpanUsage:
    """Token usage a GenAI span reports. ``input`` includes cache reads and writes."""

    input: int | float = 0
    output: int | float = 0
    cache_read: int | float = 0
    cache_write: int | float = 0

    @property
    def total(self) -> int | float:
        return self.input + self.output


def span_usage(attrs: dict[str, Any]) -> SpanUsage | None:
    """The usage of a span's attributes, None when it reports no input or output tokens."""
    inp, out = _tokens(attrs.get(INPUT)), _tokens(attrs.get(OUTPUT))
    if inp is None and out is None:
        return None
    return SpanUsage(inp or 0, out or 0, _tokens(attrs.get(CACHE_READ)) or 0,
                     _tokens(_first(attrs, CACHE_WRITE)) or 0)


class UnpricedTokens:
    """Tokens of models without a known price, by signal and model: the exporter's own
    counter. At most ``max_series`` series, the last of them the overflow series; a
    cumulative point counts its increase since the stream's previous point. It outlives
    reloads (each reload builds a new :class:`PriceBook` around the same one)."""

    def __init__(self, max_series: int = 2000, max_label_length: int = 256):
        self.max_series = max(2, max_series)
        # model names longer than this are cut, as the mapped series' label values are
        # (limits.max_label_value_length; a reload may change it)
        self.max_label_length = max_label_length
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], float] = {}
        self._overflow = 0.0
        self._streams: dict[tuple[Any, ...], tuple[int, float]] = {}
        self._started_ns = time.time_ns()

    def add(self, signal: str, model: str, tokens: float) -> None:
        """Counts ``tokens`` of ``model`` seen in ``signal`` records."""
        if tokens <= 0:
            return
        cap = self.max_label_length
        if len(model) > cap or "\x00" in model:
            model = model[:cap].replace("\x00", "\ufffd")
        key = (signal, model)
        with self._lock:
            if key in self._counts:
                self._counts[key] += tokens
            elif len(self._counts) < self.max_series - 1:
                self._counts[key] = tokens
            else:
                self._overflow += tokens

    def add_cumulative(self, record: Record, model: str, value: float) -> None:
        """Counts the increase of a cumulative point's tokens since its stream's last point
        (all of it for a stream that started after the exporter, or after a reset)."""
        stream = (record.name, tuple(sorted((k, str(v)) for k, v in record.attributes.items())))
        with self._lock:
            prev = self._streams.pop(stream, None)
            if prev is None:
                inc = value if record.start_ns >= self._started_ns else 0.0
            elif prev[0] == record.start_ns and value >= prev[1]:
                inc = value - prev[1]
            else:
                inc = value  # a reset
            self._streams[stream] = (record.start_ns, value)
            if len(self._streams) > 4 * self.max_series:
                self._streams.pop(next(iter(self._streams)))
        self.add(METRIC, model, inc)

    def snapshot(self) -> tuple[dict[tuple[str, str], float], float]:
        """(counts by (signal, model), tokens that went to the overflow series)."""
        with self._lock:
            return dict(self._counts), self._overflow


@dataclass(frozen=True)
class _Found:
    """A model of the price database, or an override from the config."""

    model: ModelInfo | None = None
    provider: Provider | None = None
    override: PriceOverride | None = None


class PriceBook:
    """Prices spans and token usage metric points (the mapper's pricer). Thread-safe;
    immutable apart from its caches."""

    attributes = ATTRIBUTES

    def __init__(self, config: GenAIConfig, unpriced: UnpricedTokens | None = None):
        self.config = config
        self.unpriced = unpriced if unpriced is not None else UnpricedTokens()
        self._overrides: dict[tuple[str | None, str], _Found] = {
            (None if p.provider is None else p.provider.lower(), p.model.lower()):
                _Found(override=p)
            for p in config.prices}
        self._found: dict[tuple[str, str], _Found | None] = {}
        self._local = threading.local()

    # -- lookups --------------------------------------------------------------------------

    def find(self, provider: str, model: str) -> _Found | None:
        """The price source of a model (an override wins), None when nothing prices it."""
        return self._override(provider, model) or self._database(provider, model)

    def _override(self, provider: str, model: str) -> _Found | None:
        if not self._overrides:
            return None
        provider, model = provider.lower(), model.lower()
        return self._overrides.get((provider, model)) or self._overrides.get((None, model))

    def _database(self, provider: str, model: str) -> _Found | None:
        """The database's price of a model, None when it has none (or is turned off)."""
        key = (provider.lower(), model.lower())
        if key in self._found:
            return self._found[key]
        found = self._lookup(*key)
        if len(key[0]) + len(key[1]) <= _CACHED_NAME_LENGTH:  # oversized names are not kept
            if len(self._found) >= _LOOKUP_CACHE:
                self._found.clear()  # model names come from senders: keep the cache bounded
            self._found[key] = found
        return found

    def _lookup(self, provider: str, model: str) -> _Found | None:
        if not self.config.builtin_prices or not model:
            return None
        snapshot = data_snapshot.get_snapshot()
        provider_id = PROVIDER_IDS.get(provider, provider) or None
        for pid in ((provider_id, None) if provider_id else (None,)):
            try:
                p, m = snapshot.find_provider_model(model, None, pid, None)
            except LookupError:
                continue
            return _Found(model=m, provider=p)
        return None

    def _resolve(self, attrs: dict[str, Any]) -> tuple[str, _Found | None]:
        """(the model label, its price source): an override of the response model, then one
        of the request model, then the database's price of the response model (it names the
        exact version billed), then of the request model."""
        provider = _first(attrs, PROVIDER)
        provider = provider if isinstance(provider, str) else ""
        request = attrs.get(REQUEST_MODEL)
        response = attrs.get(RESPONSE_MODEL)
        label = request if isinstance(request, str) and request else (
            response if isinstance(response, str) else "")
        refs = tuple(_model_refs(response, request))
        # an override of either name wins over the database's price of either: a price set
        # for the requested model applies when the provider answers with a dated version
        for lookup in (self._override, self._database):
            for ref in refs:
                found = lookup(provider, ref)
                if found is not None:
                    return label, found
        return label, None

    # -- spans ----------------------------------------------------------------------------

    def span_cost(self, record: Record, part: str) -> float | None:
        """USD of one part of a span's usage (see :data:`PARTS`); None when the span has none
        of it or no known price. The span is priced once for all its parts."""
        local = self._local
        if getattr(local, "record", None) is not record:
            local.parts = self.span_parts(record)
            local.record = record
        parts = local.parts
        return None if parts is None else parts.get(part)

    def span_parts(self, record: Record) -> dict[str, float] | None:
        """The cost of a span by part, only the parts it used; None (and its tokens counted
        as unpriced) when its model has no known price."""
        attrs = record.attributes
        usage = span_usage(attrs)
        if usage is None:
            return None
        label, found = self._resolve(attrs)
        parts = None if found is None else self.price(found, usage, record.time_ns,
                                                      _first(attrs, SERVICE_TIER))
        if parts is None:
            self.unpriced.add(SPAN, label, usage.total)
        return parts

    def price(self, found: _Found, usage: SpanUsage, time_ns: int = 0,
              service_tier: Any = None) -> dict[str, float] | None:
        """The cost of one call's usage by part; None when the usage is inconsistent (more
        cached than input tokens)."""
        if usage.cache_read + usage.cache_write > usage.input:
            return None
        if found.override is not None:
            return _override_parts(found.override, usage)
        assert found.model is not None and found.provider is not None
        when = _when(time_ns)
        context = {"service_tier": service_tier} if isinstance(service_tier, str) else None
        model = found.model
        if context and not any(model is m for m in found.provider.models):
            context = None  # as genai-prices: variants only of the provider's own models
        fast = fast_parts(model.get_prices(when, context), usage)
        if fast is not None:
            return fast
        try:
            calc = found.model.calc_price(
                Usage(input_tokens=usage.input, output_tokens=usage.output,
                      cache_read_tokens=usage.cache_read or None,
                      cache_write_tokens=usage.cache_write or None),
                found.provider, genai_request_timestamp=when,
                price_context=context)
        except ValueError:
            return None
        mp = calc.model_price
        cache_read = _unit(mp.cache_read_mtok, usage.cache_read, usage.input)
        cache_write = _unit(mp.cache_write_mtok, usage.cache_write, usage.input)
        out: dict[str, float] = {}
        uncached = usage.input - (usage.cache_read if cache_read is not None else 0) \
            - (usage.cache_write if cache_write is not None else 0)
        _put(out, "input", uncached, calc.input_price - (cache_read or 0) - (cache_write or 0))
        _put(out, "cache_read", usage.cache_read, cache_read)
        _put(out, "cache_write", usage.cache_write, cache_write)
        _put(out, "output", usage.output, calc.output_price)
        request = calc.total_price - calc.input_price - calc.output_price
        if request:
            out["request"] = float(request)
        return out

    # -- metric points --------------------------------------------------------------------

    def point_price(self, record: Record) -> Priced | None:
        """The tokens of a ``gen_ai.client.token.usage`` point and the USD of one of them at
        the base rate of its ``gen_ai.token.type``; None when the point carries no tokens of
        a known type, or (its tokens counted as unpriced) its model has no known price."""
        attrs = record.attributes
        token_type = attrs.get(TOKEN_TYPE)
        if token_type not in ("input", "output"):
            return None
        value = record.value
        tokens = value.sum if isinstance(value, Histogram) else _tokens(value)
        if tokens is None or tokens != tokens or tokens < 0:
            return None
        label, found = self._resolve(attrs)
        per_token = None if found is None else self.unit_price(found, token_type,
                                                                record.time_ns,
                                                                _first(attrs, SERVICE_TIER))
        if per_token is None:
            if record.temporality == TEMPORALITY_CUMULATIVE:
                self.unpriced.add_cumulative(record, label, tokens)
            else:
                self.unpriced.add(METRIC, label, tokens)
            return None
        return Priced(tokens, per_token)

    def unit_price(self, found: _Found, token_type: str, time_ns: int = 0,
                   service_tier: Any = None) -> float | None:
        """USD of one input or output token at the model's base rate."""
        if found.override is not None:
            o = found.override
            return (o.input_per_mtok if token_type == "input" else o.output_per_mtok) / _MTOK
        assert found.model is not None
        context = {"service_tier": service_tier} if isinstance(service_tier, str) else None
        mp: ModelPrice = found.model.get_prices(_when(time_ns), context)
        price = mp.input_mtok if token_type == "input" else mp.output_mtok
        if isinstance(price, TieredPrices):
            price = price.base
        return 0.0 if price is None else float(price) / _MTOK


def _price_keys(mp: ModelPrice) -> Iterator[tuple[str, Any]]:
    for key, value in mp.__dict__.items():
        if value is not None and not key.startswith("_"):
            yield key, value


def _tier_price(price: Any, total_input: int | float) -> float:
    """A price per unit at ``total_input`` input tokens: the highest tier they pass (the
    whole usage is charged at it), else the base."""
    if isinstance(price, TieredPrices):
        for tier in reversed(price.tiers):
            if total_input > tier.start:
                return float(tier.price)
        return float(price.base)
    return float(price)


def fast_parts(mp: ModelPrice, usage: SpanUsage) -> dict[str, float] | None:
    """The cost of a span's usage by part, in floating point, for a model price made only of
    the token kinds spans report, tiers and per-request fees; None for any other model
    price. It is genai-prices' own leaf arithmetic (a cached token with no cache price is
    charged as input; tiers apply to all tokens past their input threshold), about ten times
    faster than its Decimal calculation; tests hold the two equal over the whole database."""
    prices: dict[str, Any] = {}
    for key, value in _price_keys(mp):
        if key in _FAST_KEYS:
            prices[key] = value
        elif key not in _UNREPORTED_KEYS:
            return None
    total = usage.input
    read = usage.cache_read if "cache_read_mtok" in prices else 0
    write = usage.cache_write if "cache_write_mtok" in prices else 0
    out: dict[str, float] = {}
    for part, tokens, key in (("input", usage.input - read - write, "input_mtok"),
                              ("cache_read", read, "cache_read_mtok"),
                              ("cache_write", write, "cache_write_mtok"),
                              ("output", usage.output, "output_mtok")):
        if tokens and key in prices:
            out[part] = tokens * _tier_price(prices[key], total) / _MTOK
        elif tokens and part != "input" and part != "output":
            continue
        elif tokens:
            out[part] = 0.0  # the model charges nothing for these tokens
    if "requests_kcount" in prices:
        out["request"] = _tier_price(prices["requests_kcount"], total) / 1000
    return out


def _model_refs(*candidates: Any) -> Iterator[str]:
    seen = set()
    for c in candidates:
        if isinstance(c, str) and c and c not in seen:
            seen.add(c)
            yield c


def _when(time_ns: int) -> datetime:
    return datetime.fromtimestamp((time_ns or time.time_ns()) / 1e9, timezone.utc)


def _unit(price: Any, count: int | float, total_input: int | float) -> Decimal | None:
    """The database's charge for ``count`` tokens at a price key, None when it has no price
    for that key (those tokens are then charged as input)."""
    if price is None:
        return None
    return calc_unit_price(price, count, total_input, _MTOK)


def _put(out: dict[str, float], part: str, tokens: int | float, usd: Decimal | float | None
         ) -> None:
    if tokens and usd is not None:
        out[part] = float(usd)


def _override_parts(o: PriceOverride, usage: SpanUsage) -> dict[str, float]:
    read = o.input_per_mtok if o.cache_read_per_mtok is None else o.cache_read_per_mtok
    write = o.input_per_mtok if o.cache_write_per_mtok is None else o.cache_write_per_mtok
    out: dict[str, float] = {}
    _put(out, "input", usage.input - usage.cache_read - usage.cache_write,
         (usage.input - usage.cache_read - usage.cache_write) * o.input_per_mtok / _MTOK)
    _put(out, "cache_read", usage.cache_read, usage.cache_read * read / _MTOK)
    _put(out, "cache_write", usage.cache_write, usage.cache_write * write / _MTOK)
    _put(out, "output", usage.output, usage.output * o.output_per_mtok / _MTOK)
    return out
