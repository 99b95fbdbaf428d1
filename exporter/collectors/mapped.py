"""Exposes the store's mapped series: fresh metric families on every scrape."""

from __future__ import annotations

import math
from typing import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.naming import OVERFLOW_LABEL
from exporter.rules import COUNTER, GAUGE
from exporter.store import OVERFLOW, Store

__all__ = ["MappedMetricsCollector"]

_OVERFLOW_LABELS = {OVERFLOW_LABEL: "true"}


def _bound(b: float) -> str:
    # prometheus_client's own formatting of le values ("0.5", "1.0", "+Inf")
    return "+Inf" if math.isinf(b) else repr(float(b))


class MappedMetricsCollector(Collector):
    """Reads a consistent snapshot of the store under its lock, then builds the families."""

    def __init__(self, store: Store):
        self._store = store

    def collect(self) -> Iterator[Metric]:
        store = self._store
        for definition, series, _overflow, _expired in store.snapshot():
            if not series:
                continue
            names = definition.label_names
            if definition.type == COUNTER:
                base = definition.name[: -len("_total")]
                family = Metric(base, definition.help, "counter")
                sample_name = definition.name
                for labels, value in series.items():
                    lab = _OVERFLOW_LABELS if labels == OVERFLOW else dict(zip(names, labels))
                    family.samples.append(Sample(sample_name, lab, value, None, None))
            elif definition.type == GAUGE:
                family = Metric(definition.name, definition.help, "gauge")
                for labels, (_t, value) in series.items():
                    lab = _OVERFLOW_LABELS if labels == OVERFLOW else dict(zip(names, labels))
                    family.samples.append(Sample(definition.name, lab, value, None, None))
            else:
                family = Metric(definition.name, definition.help, "histogram")
                bounds = [_bound(b) for b in definition.buckets] + ["+Inf"]
                bucket_name = definition.name + "_bucket"
                samples = family.samples
                for labels, h in series.items():
                    lab = dict(_OVERFLOW_LABELS) if labels == OVERFLOW else dict(zip(names, labels))
                    acc = 0
                    for le, c in zip(bounds, h[2:]):
                        acc += c
                        samples.append(Sample(bucket_name, {**lab, "le": le}, acc, None, None))
                    samples.append(Sample(definition.name + "_count", lab, h[1], None, None))
                    samples.append(Sample(definition.name + "_sum", lab, h[0], None, None))
            yield family

