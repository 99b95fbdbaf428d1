from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from tests.helpers import InProcessExporter, ProcessExporter


@pytest.fixture
def exporter_factory(tmp_path) -> Iterator[Callable[..., InProcessExporter]]:
    """Starts in-process exporters (real listeners on loopback) and stops them afterwards."""
    started: list[InProcessExporter] = []

    def start(config_text: str | None = None, **kwargs: Any) -> InProcessExporter:
        sub = tmp_path / f"exporter{len(started)}"
        sub.mkdir()
        e = InProcessExporter(config_text, sub, **kwargs)
        started.append(e)
        return e

    yield start
    for e in started:
        e.close()


@pytest.fixture
def exporter(exporter_factory) -> InProcessExporter:
    """An in-process exporter on the built-in rules."""
    return exporter_factory()


@pytest.fixture
def process_factory() -> Iterator[Callable[..., ProcessExporter]]:
    """Starts `kpi-exporter serve` processes and stops them afterwards."""
    started: list[ProcessExporter] = []

    def start(*args: str, **kwargs) -> ProcessExporter:
        e = ProcessExporter(list(args), **kwargs)
        started.append(e)
        return e

    yield start
    for e in started:
        e.close()
