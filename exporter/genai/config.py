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

from dataclasses import dataclass
from typing import Any

from exporter.configcheck import (as_finite, at, get_bool, open_section, problem, show,
                                  unknown_keys)

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


def _price(raw: dict[Any, Any], key: str, where: str, problems: list[str]) -> float | None:
    if key not in raw:
        problems.append(f"{at(raw, key)}{where}: {key!r} is required: USD per million tokens "
                        f"(for example 2.5)")
        return None
    number = as_finite(raw.get(key))
    if number is None or number < 0:
        problems.append(problem(raw, key, where, f"expected USD per million tokens as a number "
                                                 f"of 0 or more (for example 2.5), got "
                                                 f"{show(raw.get(key))}"))
        return None
    return number


def _name(raw: dict[Any, Any], key: str, where: str, problems: list[str],
          example: str) -> str | None:
    value = raw.get(key)
    if key not in raw:
        problems.append(f"{at(raw, key)}{where}: {key!r} is required: {example}")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(problem(raw, key, where, f"expected {example}, got {show(value)}"))
        return None
    return value.strip()


def _parse_price(entries: list[Any], index: int, problems: list[str]) -> PriceOverride | None:
    raw = entries[index]
    where = f"genai.prices[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{at(entries, index)}{where}: expected a mapping with 'model', "
                        f"'input_per_mtok' and 'output_per_mtok', got {show(raw)}")
        return None
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
    if len(problems) > before or model is None:
        return None
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
        problems.append(problem(raw, "prices", where, f"expected a list of {{model, "
                                                      f"input_per_mtok, output_per_mtok}} "
                                                      f"mappings, got {show(entries)}"))
        return GenAIConfig(builtin)
    prices: list[PriceOverride] = []
    seen: dict[tuple[str | None, str], int] = {}
    for i in range(len(entries)):
        price = _parse_price(entries, i, problems)
        if price is None:
            continue
        key = (None if price.provider is None else price.provider.lower(), price.model.lower())
        if key in seen:
            problems.append(f"{at(entries, i)}genai.prices[{i}]: model {show(price.model)}"
                            f"{' of provider ' + show(price.provider) if price.provider else ''}"
                            f" is priced twice (also genai.prices[{seen[key]}]); keep one")
            continue
        seen[key] = i
        prices.append(price)
    return GenAIConfig(builtin, tuple(prices))
