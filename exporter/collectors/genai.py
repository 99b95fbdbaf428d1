"""Exposes the GenAI token usage that could not be priced."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.genai.prices import UnpricedTokens
from exporter.naming import OVERFLOW_LABEL

__all__ = ["UnpricedTokensCollector"]


class UnpricedTokensCollector(Collector):
    """``kpi_exporter_gen_ai_unpriced_tokens_total{signal, model}``, capped at the series
    limit like the mapped metrics (the rest in one overflow series)."""

    def __init__(self, unpriced: UnpricedTokens):
        self._unpriced = unpriced

    def collect(self) -> Iterator[Metric]:
        counts, overflow = self._unpriced.snapshot()
        family = CounterMetricFamily(
            "kpi_exporter_gen_ai_unpriced_tokens",
            "GenAI tokens of models with no known price (price them under genai.prices), by "
            "signal (span or metric) and model; no cost counter includes them.",
            labels=["signal", "model"])
        for (signal, model), tokens in sorted(counts.items()):
            family.add_metric([signal, model], tokens)
        if overflow:
            family.samples.append(Sample(family.name + "_total", {OVERFLOW_LABEL: "true"},
                                         overflow, None, None))
        yield family
