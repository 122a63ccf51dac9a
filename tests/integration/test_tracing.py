"""Tracing end to end: the real gateway and consumer processes export over OTLP/HTTP to
a receiver this test runs; the gateway's span and the delivery's are one trace."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from faults.procs import Gateway
from gateway.verifiers.crystallize import sign_hmac
from tests.consumers.harness import ConsumerProcess, read_jsonl, read_topic, wait_until
from tests.integration.conftest import TopicFactory
from webhook_common.contract import H_TRACEPARENT

SECRET = "trace-signature-secret-0123456789"
TRACE = "5b8efff798038103d269b633813fc60c"
CALLER_SPAN = "eee19b7ec3c1b174"


@dataclass(frozen=True)
class Received:
    service: str
    span: Span


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: decodes each export request."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(self.path, self.headers.get("content-type", ""), request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def add(self, path: str, content_type: str, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.paths.append(f"{path} {content_type}")
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(Received(attributes.get("service.name", ""), span))

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.spans)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        thread.join(5)


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


async def test_gateway_and_delivery_spans_are_one_trace(
    kafka_bootstrap: str, kafka_topic: TopicFactory, receiver: Receiver, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw")
    dlq = await kafka_topic("dlq")
    out = tmp_path / "events.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka_bootstrap},
                "gateway": {"log_format": "text"},
                "sources": [
                    {
                        "name": "crystallize",
                        "path": "/webhooks/crystallize",
                        "verifier": {"type": "crystallize", "mode": "hmac"},
                        "secrets": [SECRET],
                        "topic": raw,
                    }
                ],
                "consumers": {
                    "group": f"g-{uuid.uuid4().hex[:8]}",
                    "topics": [raw],
                    "dlq_topic": dlq,
                    "sinks": {"events_file": {"type": "file", "path": str(out)}},
                    "routes": [{"name": "everything", "sinks": ["events_file"]}],
                },
            }
        )
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        # Nothing is exported before shutdown: what arrives was flushed on SIGTERM.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
        "OTEL_SERVICE_NAME": "",
        "OTEL_RESOURCE_ATTRIBUTES": "",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    gateway = Gateway(config, tmp_path / "gateway.log", env)
    consumer = ConsumerProcess(config, tmp_path / "consumer.log", env=env)
    try:
        gateway.start()
        await gateway.wait_ready()
        body = orjson.dumps({"order": {"get": {"id": "order-1"}}})
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(
                gateway.url + "/webhooks/crystallize?concern=order&event=created",
                content=body,
                headers={
                    "content-type": "application/json",
                    "x-crystallize-signature": sign_hmac(SECRET, body),
                    "traceparent": f"00-{TRACE}-{CALLER_SPAN}-01",
                    "tracestate": "vendor=opaque",
                },
            )
        assert r.status_code == 202, r.text
        consumer.start()
        await consumer.wait_ready()
        await wait_until(lambda: read_jsonl(out), 60, "the event in the file sink")
        assert receiver.received() == []  # batched until shutdown
        assert consumer.terminate() == 0, consumer.logs()
        assert await gateway.stop() == 0, gateway.tail()
    finally:
        consumer.stop_quietly()
        await gateway.stop()

    spans = receiver.received()
    assert all(p == "/v1/traces application/x-protobuf" for p in receiver.paths), receiver.paths
    by_service = {(s.service, s.span.name): s.span for s in spans}
    assert set(by_service) == {
        ("webhook-gateway", "POST /webhooks/crystallize"),
        ("webhook-consumers", "deliver events_file"),
    }, by_service
    ingress = by_service["webhook-gateway", "POST /webhooks/crystallize"]
    delivery = by_service["webhook-consumers", "deliver events_file"]

    assert ingress.kind == Span.SPAN_KIND_SERVER
    assert ingress.trace_id.hex() == TRACE
    assert ingress.parent_span_id.hex() == CALLER_SPAN
    assert ingress.trace_state == "vendor=opaque"
    ingress_attributes = attributes(ingress)
    assert ingress_attributes["http.response.status_code"] == 202
    assert ingress_attributes["cloudevents.event_id"] == r.json()["id"]
    assert ingress_attributes["messaging.destination.name"] == raw

    (record,) = await read_topic(kafka_bootstrap, raw, 1)
    headers = dict(record.headers)
    assert headers[H_TRACEPARENT].decode().startswith(f"00-{TRACE}-{ingress.span_id.hex()}-")

    assert delivery.kind == Span.SPAN_KIND_CONSUMER
    assert delivery.trace_id.hex() == TRACE
    assert delivery.parent_span_id == ingress.span_id
    assert [(x.trace_id.hex(), x.span_id) for x in delivery.links] == [(TRACE, ingress.span_id)]
    delivery_attributes = attributes(delivery)
    assert delivery_attributes["webhookgw.sink"] == "events_file"
    assert delivery_attributes["webhookgw.outcome"] == "delivered"
    assert delivery_attributes["messaging.destination.name"] == raw
    assert delivery_attributes["messaging.kafka.offset"] == record.offset
