"""Prometheus metrics of the consumers, on an explicit registry (prefix
``webhookgw_consumer_``). Label values are config names and fixed words, never input."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "webhookgw_consumer_"

_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = PREFIX
        self.consumed = Counter(
            p + "consumed_total", "Records fetched from Kafka", ["topic"], registry=registry
        )
        self.duplicates = Counter(
            p + "duplicates_skipped_total",
            "Deliveries skipped because the (event id, sink) mark existed",
            ["sink"],
            registry=registry,
        )
        self.deliveries = Counter(
            p + "deliveries_total",
            "Delivery attempts by sink and outcome (success, retriable_error, permanent_error)",
            ["sink", "outcome"],
            registry=registry,
        )
        self.delivery_duration = Histogram(
            p + "delivery_duration_seconds",
            "Duration of one delivery attempt",
            ["sink"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            p + "retries_total", "Delivery attempts after a failure", ["sink"], registry=registry
        )
        self.dead_lettered = Counter(
            p + "dead_lettered_total",
            "Records written to the dead-letter topic, by sink and reason",
            ["sink", "reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            p + "in_flight", "Records fetched and not finished", registry=registry
        )
        self.lag = Gauge(
            p + "lag",
            "Records between the committable offset and the partition's high watermark",
            ["topic", "partition"],
            registry=registry,
        )
        self.end_to_end = Histogram(
            p + "end_to_end_latency_seconds",
            "From the gateway's ce_time to a successful delivery",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.unrouted = Counter(
            p + "unrouted_total",
            "Events no route matched, by action (drop, dead-letter)",
            ["action"],
            registry=registry,
        )
        self.dedup_errors = Counter(
            p + "dedup_errors_total",
            "Dedup store failures (the delivery waits and tries again)",
            ["operation"],
            registry=registry,
        )
        self.commits = Counter(
            p + "commits_total", "Offset commits by outcome", ["outcome"], registry=registry
        )
        self.paused = Gauge(
            p + "paused_partitions", "Partitions paused at the in-flight bound", registry=registry
        )
        self.admin_requests = Counter(
            p + "admin_requests_total",
            "Requests to the admin port by path and status",
            ["path", "status"],
            registry=registry,
        )
        self.replayed = Counter(
            p + "replayed_total",
            "Replay results by sink and outcome",
            ["sink", "outcome"],
            registry=registry,
        )
