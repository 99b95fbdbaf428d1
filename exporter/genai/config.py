"""The ``genai`` section: where the prices of GenAI token usage come from.

    genai:
      builtin_prices: true          # the price database bundled with genai-prices
      prices:                       # your own prices; they win over the database
        - model: ft:gpt-4o-mini:acme:support
          provider: openai          # optional: any provider when absent
          input_per_mtok: 0.30      # USD per million tokens
          output_per_mtok: 1.20
          cache_read_per_mtok: 0.15 # optional: the input price when absent
          cache_write_per_mtok: 0.30
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from exporter.configcheck import get_bool, open_section
from exporter.rules import unknown_keys
from exporter.yamlload import line_of

__all__ = ["GenAIConfig", "PriceOverride", "parse_genai"]

_GENAI_KEYS = ("builtin_prices", "prices")
_PRICE_KEYS = ("model", "provider", "input_per_mtok", "output_per_mtok", "cache_read_per_mtok",
               "cache_write_per_mtok")
_REQUIRED_PRICES = ("input_per_mtok", "output_per_mtok")
_OPTIONAL_PRICES = ("cache_read_per_mtok", "cache_write_per_mtok")


@dataclass(frozen=True)
class PriceOverride:
    """The price of one model, in USD per million tokens. ``provider`` None matches any
    provider; cache prices None are charged at the input price."""

    model: str
    provider: str | None
    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None


@dataclass(frozen=True)
class GenAIConfig:
    """The ``genai`` section."""

    builtin_prices: bool = True
    prices: tuple[PriceOverride, ...] = ()


def _price(raw: dict[str, Any], key: str, where: str, problems: list[str]) -> float | None:
    value = raw.get(key)
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer past any float
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        problems.append(f"{where}.{key}: expected USD per million tokens as a number of 0 or "
                        f"more (for example 2.5), got {value!r}")
        return None
    return number


def _name(raw: dict[str, Any], key: str, where: str, problems: list[str],
          example: str) -> str | None:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}.{key}: expected {example}, got {value!r}")
        return None
    return value.strip()


def _parse_price(index: int, raw: Any, problems: list[str]) -> PriceOverride | None:
    where = f"genai.prices[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping with 'model', 'input_per_mtok' and "
                        f"'output_per_mtok', got {raw!r}")
        return None
    line = line_of(raw)
    before = len(problems)
    problems.extend(unknown_keys(raw, _PRICE_KEYS, where))
    model = _name(raw, "model", where, problems, "the model name as the instrumentation "
                  "reports it (gen_ai.request.model or gen_ai.response.model)")
    provider = None
    if "provider" in raw:
        provider = _name(raw, "provider", where, problems, "a provider name such as openai "
                         "(gen_ai.provider.name), or no 'provider' for any provider")
    prices = {key: _price(raw, key, where, problems) for key in _REQUIRED_PRICES}
    prices.update({key: _price(raw, key, where, problems) for key in _OPTIONAL_PRICES
                   if key in raw})
    if len(problems) > before:
        if line:
            problems[before:] = [f"line {line}: {p}" for p in problems[before:]]
        return None
    assert model is not None
    return PriceOverride(
        model=model, provider=provider,
        input_per_mtok=prices["input_per_mtok"] or 0.0,
        output_per_mtok=prices["output_per_mtok"] or 0.0,
        cache_read_per_mtok=prices.get("cache_read_per_mtok"),
        cache_write_per_mtok=prices.get("cache_write_per_mtok"))


def parse_genai(raw: Any, problems: list[str]) -> GenAIConfig:
    """Parses the ``genai`` section; each problem names the key and what to do."""
    raw, where = open_section(raw, "genai", _GENAI_KEYS, "'prices' and 'builtin_prices'",
                              problems)
    builtin = get_bool(raw, "builtin_prices", where, problems, True)
    entries = raw.get("prices")
    if entries is None:
        return GenAIConfig(builtin)
    if not isinstance(entries, list):
        line = line_of(raw)
        problems.append(f"{'line ' + str(line) + ': ' if line else ''}genai.prices: expected "
                        f"a list of {{model, input_per_mtok, output_per_mtok}} mappings, got "
                        f"{entries!r}")
        return GenAIConfig(builtin)
    prices: list[PriceOverride] = []
    seen: dict[tuple[str | None, str], int] = {}
    for i, item in enumerate(entries):
        price = _parse_price(i, item, problems)
        if price is None:
            continue
        key = (None if price.provider is None else price.provider.lower(), price.model.lower())
        if key in seen:
            line = line_of(item)
            problems.append(f"{'line ' + str(line) + ': ' if line else ''}genai.prices[{i}]: "
                            f"model {price.model!r}"
                            f"{' of provider ' + repr(price.provider) if price.provider else ''}"
                            f" is priced twice (also genai.prices[{seen[key]}]); keep one")
            continue
        seen[key] = i
        prices.append(price)
    return GenAIConfig(builtin, tuple(prices))
