"""kpi-exporter: OpenTelemetry events, spans and metrics in; Prometheus metrics and KPIs out."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("kpi-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
