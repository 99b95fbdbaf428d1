"""GenAI usage: the ``genai`` config section and the prices of token usage."""

from exporter.genai.config import GenAIConfig, PriceOverride, parse_genai
from exporter.genai.prices import PriceBook, UnpricedTokens

__all__ = ["GenAIConfig", "PriceOverride", "parse_genai", "PriceBook", "UnpricedTokens"]
