"""Exposes the store's mapped series: fresh metric families on every scrape.

Counter and histogram bucket samples carry the newest exemplar of their series (trace_id,
span_id, value, timestamp) where one was kept; prometheus_client writes exemplars only in
the OpenMetrics format, which Prometheus asks for first.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from exporter.naming import OVERFLOW_LABEL
from exporter.pacing import Pacer
from exporter.rules import COUNTER, GAUGE
from exporter.store import COUNTER_EXEMPLAR, OVERFLOW, Exemplar as StoredExemplar, Store

__all__ = ["MappedMetricsCollector", "exemplar"]

_OVERFLOW_LABELS = {OVERFLOW_LABEL: "true"}
# OpenMetrics: the names and values of an exemplar's labels, together, in code points.
MAX_EXEMPLAR_LABEL_LENGTH = 128


def exemplar(stored: StoredExemplar | None) -> Exemplar | None:
    """An exposition exemplar, or None when there is none or its labels would be over the
    OpenMetrics limit (prometheus_client does not check exemplars of custom collectors)."""
    if stored is None:
        return None
    t, value, trace_id, span_id = stored
    labels = {"trace_id": trace_id.hex()}
    if span_id:
        labels["span_id"] = span_id.hex()
    if sum(len(k) + len(v) for k, v in labels.items()) > MAX_EXEMPLAR_LABEL_LENGTH:
        return None
    return Exemplar(labels, value, t / 1e9)


class MappedMetricsCollector(Collector):
    """Reads a consistent snapshot of the store under its lock, then builds the families."""

    def __init__(self, store: Store):
        self._store = store

    def collect(self) -> Iterator[Metric]:
        store = self._store
        # a metric at its series cap is thousands of samples to build, while request threads
        # wait for the interpreter lock: give way to them after every slice of the work
        pacer = Pacer()
        all_exemplars = store.exemplars()
        for definition, series, _overflow, _expired in store.snapshot():
            if not series:
                continue
            names = definition.label_names
            exemplars = all_exemplars.get(definition.name, {})
            if definition.type == COUNTER:
                base = definition.name[: -len("_total")]
                family = Metric(base, definition.help, "counter")
                sample_name = definition.name
                for labels, value in series.items():
                    pacer.pace()
                    lab = _OVERFLOW_LABELS if labels == OVERFLOW else dict(zip(names, labels))
                    ex = exemplars.get(labels)
                    family.samples.append(Sample(sample_name, lab, value, None, exemplar(
                        ex.get(COUNTER_EXEMPLAR)) if ex else None))
            elif definition.type == GAUGE:
                family = Metric(definition.name, definition.help, "gauge")
                for labels, (_t, value) in series.items():
                    pacer.pace()
                    lab = _OVERFLOW_LABELS if labels == OVERFLOW else dict(zip(names, labels))
                    family.samples.append(Sample(definition.name, lab, value, None, None))
            else:
                family = Metric(definition.name, definition.help, "histogram")
                # le as prometheus_client's own histograms write it ("0.5", "1.0",
                # "1.048576e+06", "+Inf"), the same in text and OpenMetrics
                bounds = [floatToGoString(b) for b in definition.buckets] + ["+Inf"]
                bucket_name = definition.name + "_bucket"
                samples = family.samples
                for labels, h in series.items():
                    pacer.pace()
                    lab = dict(_OVERFLOW_LABELS) if labels == OVERFLOW else dict(zip(names, labels))
                    ex = exemplars.get(labels) or {}
                    acc = 0
                    for i, (le, c) in enumerate(zip(bounds, h[2:])):
                        acc += c
                        samples.append(Sample(bucket_name, {**lab, "le": le}, acc, None,
                                              exemplar(ex.get(i)) if ex else None))
                    samples.append(Sample(definition.name + "_count", lab, h[1], None, None))
                    samples.append(Sample(definition.name + "_sum", lab, h[0], None, None))
            yield family

