"""prometheus_client collectors, one per source of metrics: the mapped series, the exporter's
own health, and (registered by their owners) the KPI windows."""

from exporter.collectors.mapped import MappedMetricsCollector
from exporter.collectors.selfmetrics import SelfMetrics, StoreStatsCollector

__all__ = ["MappedMetricsCollector", "SelfMetrics", "StoreStatsCollector"]
