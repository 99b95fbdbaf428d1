"""The kpi-exporter monitoring mixin: Grafana dashboards, Prometheus recording rules,
alerts with their promtool tests, an Alertmanager example and the runbooks, generated from
one configuration (mixin/config.py) by ``python -m mixin.generate``."""
