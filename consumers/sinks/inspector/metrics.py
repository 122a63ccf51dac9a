"""The inspector's Prometheus collectors: page requests and replays, by sink."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True, slots=True)
class InspectorMetrics:
    requests: Counter  # labels: sink, path, status
    replays: Counter  # labels: sink, target, outcome


# One set of collectors per registry: several inspector sinks in one process share them
# (label `sink`), and a test's fresh registry gets fresh ones.
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, InspectorMetrics] = (
    weakref.WeakKeyDictionary()
)


def inspector_metrics(registry: CollectorRegistry) -> InspectorMetrics:
    found = _BY_REGISTRY.get(registry)
    if found is None:
        found = InspectorMetrics(
            requests=Counter(
                "webhookgw_inspector_requests",
                "HTTP requests to the inspector page, by path and status",
                ["sink", "path", "status"],
                registry=registry,
            ),
            replays=Counter(
                "webhookgw_inspector_replays",
                "Replays started from the inspector page, by target sink and outcome",
                ["sink", "target", "outcome"],
                registry=registry,
            ),
        )
        _BY_REGISTRY[registry] = found
    return found
