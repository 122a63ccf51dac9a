"""Prometheus metrics on an explicit registry under one name prefix, for both sides.

Each side declares its metrics in one class built on :class:`MetricSet`, so the
registry and prefix are given once and no metric lands on the global registry.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from webhook_common import package_version


class MetricSet:
    """Makes counters, gauges and histograms named ``prefix + name`` on ``registry``."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.registry = registry
        self.prefix = prefix

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self.prefix + name, doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(self.prefix + name, doc, labels, registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> Histogram:
        return Histogram(self.prefix + name, doc, labels, buckets=buckets, registry=self.registry)


def process_registry(component: str) -> CollectorRegistry:
    """The registry of one process: the client library's process (CPU, RSS, open files),
    platform and GC collectors, which a bare ``CollectorRegistry`` lacks, and
    ``webhookgw_build_info{component, version, python}`` (value 1) so dashboards can
    tell versions apart during a rollout."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    info = Gauge(
        "webhookgw_build_info",
        "The running build: always 1, labelled with component, version and Python.",
        ["component", "version", "python"],
        registry=registry,
    )
    info.labels(component, package_version(), platform.python_version()).set(1)
    return registry
