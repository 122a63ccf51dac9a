"""Prometheus metrics of the consumers, on an explicit registry (prefix
``webhookgw_consumer_``). Label values are config names and fixed words, never input."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from webhook_common.metrics import MetricSet

PREFIX = "webhookgw_consumer_"

_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricSet(registry, PREFIX)
        self.consumed = m.counter("consumed_total", "Records fetched from Kafka", ["topic"])
        self.duplicates = m.counter(
            "duplicates_skipped_total",
            "Deliveries skipped because the (event id, sink) mark existed",
            ["sink"],
        )
        self.deliveries = m.counter(
            "deliveries_total",
            "Delivery attempts by sink and outcome (success, retriable_error, permanent_error)",
            ["sink", "outcome"],
        )
        self.delivery_duration = m.histogram(
            "delivery_duration_seconds",
            "Duration of one delivery attempt",
            ["sink"],
            buckets=_DURATION_BUCKETS,
        )
        self.batch_size = m.histogram(
            "sink_batch_events",
            "Events per send_batch call to a sink that takes several at once",
            ["sink"],
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
        )
        self.batch_failures = m.counter(
            "sink_batch_failures_total",
            "send_batch calls that failed, after which each of their events was sent on its own",
            ["sink"],
        )
        self.retries = m.counter("retries_total", "Delivery attempts after a failure", ["sink"])
        self.held = m.counter(
            "held_total",
            "Events whose attempts ran out while the sink answered nothing else: kept "
            "(circuit opened) instead of dead-lettered",
            ["sink"],
        )
        self.circuit_open = m.gauge(
            "sink_circuit_open",
            "1 while the sink's circuit breaker is open or probing, else 0",
            ["sink"],
        )
        self.circuit_transitions = m.counter(
            "sink_circuit_transitions_total",
            "Circuit breaker state changes by sink and new state (open, half_open, closed)",
            ["sink", "state"],
        )
        self.dead_lettered = m.counter(
            "dead_lettered_total",
            "Records written to the dead-letter topic, by sink and reason",
            ["sink", "reason"],
        )
        self.undelivered = m.counter(
            "undelivered_total",
            "Events a sink gave up on with no dead-letter topic to write them to "
            "(replay), by sink and reason",
            ["sink", "reason"],
        )
        self.in_flight = m.gauge("in_flight", "Records fetched and not finished")
        self.lag = m.gauge(
            "lag",
            "Records between the committable offset and the partition's high watermark",
            ["topic", "partition"],
        )
        self.lag_seconds = m.gauge(
            "lag_seconds",
            "Age of the oldest record of the partition not yet finished (from its Kafka "
            "timestamp, the gateway's write time); 0 when the partition is caught up",
            ["topic", "partition"],
        )
        self.end_to_end = m.histogram(
            "end_to_end_latency_seconds",
            "From the gateway's ce_time to a successful delivery",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
        )
        self.unrouted = m.counter(
            "unrouted_total", "Events no route matched, by action (drop, dead-letter)", ["action"]
        )
        self.dedup_errors = m.counter(
            "dedup_errors_total",
            "Dedup store failures (the delivery waits and tries again)",
            ["operation"],
        )
        self.producer_renewals = m.counter(
            "producer_renewals_total",
            "Times the dead-letter producer was replaced because Kafka no longer took its "
            "sequence numbers (OutOfOrderSequenceNumber, UnknownProducerId)",
        )
        self.commits = m.counter("commits_total", "Offset commits by outcome", ["outcome"])
        self.paused = m.gauge("paused_partitions", "Partitions paused at the in-flight bound")
        self.admin_requests = m.counter(
            "admin_requests_total",
            "Requests to the admin port by path and status",
            ["path", "status"],
        )
        self.replayed = m.counter(
            "replayed_total", "Replay results by sink and outcome", ["sink", "outcome"]
        )
