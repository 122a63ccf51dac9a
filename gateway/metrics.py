"""Ingress metrics, all ``webhookgw_ingress_*``, on a registry the caller passes in.

Label values are fixed sets (configured source names, HTTP status codes, verifier
reason labels, secret indexes), never request input, so cardinality stays bounded.
Requests to unknown paths are counted under source ``""``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from webhook_common.metrics import MetricSet

PREFIX = "webhookgw_ingress_"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricSet(registry, PREFIX)
        self.requests = m.counter(
            "requests",
            "Webhook requests answered, by source and HTTP status.",
            ["source", "status"],
        )
        self.verification_failures = m.counter(
            "verification_failures",
            "Requests refused with 401, by source and verifier reason.",
            ["source", "reason"],
        )
        self.request_duration = m.histogram(
            "request_duration_seconds",
            "Time from request start to the last response byte, by source.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
        )
        self.produce_duration = m.histogram(
            "produce_duration_seconds",
            "Time from handing a record to the producer until Kafka acknowledged it "
            "(or the deadline passed), by source.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
        )
        self.produce_failures = m.counter(
            "produce_failures",
            "Records Kafka did not acknowledge and the gateway answered 503, by source and "
            "reason (timeout, error, unknown_topic, overloaded, spool_full, spool_error).",
            ["source", "reason"],
        )
        self.in_flight = m.gauge("in_flight_requests", "Webhook requests being handled now.")
        self.body_size = m.histogram(
            "body_size_bytes",
            "Size of request bodies read in full, by source.",
            ["source"],
            buckets=_SIZE_BUCKETS,
        )
        self.key_fallback = m.counter(
            "key_fallback",
            "Records keyed by event id because no entity id was found, by source.",
            ["source"],
        )
        self.rate_limited = m.counter(
            "rate_limited",
            "Requests refused with 429 by the source's rate limit, by source.",
            ["source"],
        )
        self.body_timeouts = m.counter(
            "body_timeouts",
            "Requests answered 408 because the body did not arrive in time, by source.",
            ["source"],
        )
        self.http_refused = m.counter(
            "http_refused",
            "Connections refused by the HTTP limits before a request reached a source "
            "(header_timeout, header_too_large, malformed, too_many_connections).",
            ["reason"],
        )
        self.secret_matched = m.counter(
            "secret_matched",
            "Verified requests by which configured secret matched (rotation progress).",
            ["source", "index"],
        )
        # The durable spool (gateway.spool); zero while it is disabled.
        self.spooled = m.counter(
            "spooled",
            "Records written to the durable spool and answered 202, by source and reason "
            "(timeout, error: Kafka did not acknowledge; backlog: the spool was not empty).",
            ["source", "reason"],
        )
        self.spool_write_failures = m.counter(
            "spool_write_failures",
            "Journal writes or fsyncs that failed (their records were answered 503).",
        )
        self.spool_skipped_bytes = m.counter(
            "spool_skipped_bytes",
            "Unreadable journal bytes recovery skipped at startup (damage, not a torn "
            "last record); the valid records around them were kept.",
        )
        self.producer_renewals = m.counter(
            "producer_renewals",
            "Times the Kafka producer was replaced because Kafka no longer took its "
            "sequence numbers (OutOfOrderSequenceNumber, UnknownProducerId): the records "
            "it refused were answered 503 or stayed in the spool.",
        )
        self.spool_rejected = m.counter(
            "spool_rejected",
            "Spooled records Kafka refused for good while draining (e.g. too large after a "
            "config change), moved to the journal directory's `rejected` file.",
        )
        self.spool_drained = m.counter(
            "spool_drained",
            "Spooled records Kafka acknowledged (or already had) and the spool released.",
        )
        self.spool_backlog_records = m.gauge(
            "spool_backlog_records", "Records in the durable spool not yet acknowledged by Kafka."
        )
        self.spool_backlog_bytes = m.gauge(
            "spool_backlog_bytes", "Journal bytes of the records not yet acknowledged by Kafka."
        )
        self.spool_fsync_duration = m.histogram(
            "spool_fsync_duration_seconds",
            "Time to write and fsync one group commit of the spool journal.",
            buckets=_FSYNC_BUCKETS,
        )
