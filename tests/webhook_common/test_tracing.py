"""webhook_common.tracing: the W3C checks, when the environment turns tracing on, spans."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.spans import MemoryTracing, hex_ids, memory_tracing, traceparent_of
from webhook_common import package_version
from webhook_common.contract import H_TRACEPARENT, H_TRACESTATE, EventMeta
from webhook_common.errors import ConfigError
from webhook_common.tracing import (
    TRACEPARENT_LENGTH,
    current_trace_headers,
    exporters_from_env,
    from_env,
    incoming,
    valid_traceparent,
    valid_tracestate,
)

__all__ = ["memory_tracing"]

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


@pytest.mark.parametrize(
    "value",
    [TRACEPARENT, f"00-{TRACE}-{PARENT}-00", f"cc-{TRACE}-{PARENT}-01"],
)
def test_valid_traceparents(value: str) -> None:
    assert len(value) == TRACEPARENT_LENGTH
    assert valid_traceparent(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        TRACEPARENT.upper(),
        f"00-{TRACE}-{PARENT}-01-extra",  # longer than the W3C format
        f"00-{TRACE}-{PARENT}-01\n",
        f"00_{TRACE}_{PARENT}_01",
        f"00-{TRACE[:-1]}g-{PARENT}-01",
        "00-" + "a" * 10_000,
    ],
)
def test_invalid_traceparents(value: str) -> None:
    assert not valid_traceparent(value)
    assert incoming(value, "vendor=x") == ("", "")


def test_tracestate_goes_only_with_a_valid_traceparent_and_only_when_clean() -> None:
    assert incoming(TRACEPARENT, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") == (
        TRACEPARENT,
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    )
    assert incoming(TRACEPARENT, None) == (TRACEPARENT, "")
    assert incoming(TRACEPARENT, "a=b\r\nx-injected: 1") == (TRACEPARENT, "")
    assert incoming(TRACEPARENT, "a=" + "b" * 600) == (TRACEPARENT, "")
    assert valid_tracestate("a=" + "b" * 510)
    assert incoming(None, "a=b") == ("", "")


def test_the_record_carries_the_trace_context_as_ce_headers() -> None:
    meta = EventMeta(id="i", source="s", type="t", time="x", traceparent=TRACEPARENT)
    headers = dict(meta.to_headers())
    assert headers[H_TRACEPARENT] == TRACEPARENT.encode()
    assert H_TRACESTATE not in headers
    with_state = EventMeta(
        id="i", source="s", type="t", time="x", traceparent=TRACEPARENT, tracestate="a=b"
    )
    back = EventMeta.from_headers(with_state.to_headers())
    assert (back.traceparent, back.tracestate) == (TRACEPARENT, "a=b")
    plain = EventMeta(id="i", source="s", type="t", time="x")
    assert H_TRACEPARENT not in dict(plain.to_headers())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "x"}, []),  # installed and named, but nothing to export to
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, ["otlp"]),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ["otlp"],
        ),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(
    env: dict[str, str], expected: list[str]
) -> None:
    assert exporters_from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_what_cannot_be_exported_to_is_a_config_error(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        exporters_from_env(env)


def test_off_means_no_tracing_object() -> None:
    assert from_env("webhook-gateway", {}) is None


def test_on_names_the_service_and_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    tracing = from_env("webhook-gateway", {"OTEL_TRACES_EXPORTER": "console"})
    assert tracing is not None
    try:
        attributes = tracing.provider.resource.attributes
        assert attributes["service.name"] == "webhook-gateway"
        assert attributes["service.version"] == package_version()
    finally:
        tracing.shutdown()


def test_otel_service_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "hooks-eu")
    tracing = from_env("webhook-gateway", {"OTEL_TRACES_EXPORTER": "console"})
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "hooks-eu"
    finally:
        tracing.shutdown()


def test_server_span_continues_the_callers_trace(memory_tracing: MemoryTracing) -> None:
    span = memory_tracing.start_server_span("POST /x", TRACEPARENT, "a=b", {"k": "v"})
    span.end()
    (done,) = memory_tracing.spans
    assert done.kind is SpanKind.SERVER
    assert hex_ids(done)[0] == TRACE
    assert done.parent is not None
    assert f"{done.parent.span_id:016x}" == PARENT
    assert done.get_span_context().trace_state.to_header() == "a=b"  # type: ignore[union-attr]
    assert dict(done.attributes or {}) == {"k": "v"}


def test_server_span_without_a_valid_caller_starts_a_trace(
    memory_tracing: MemoryTracing,
) -> None:
    memory_tracing.start_server_span("POST /x", "00-bogus", "", {}).end()
    (done,) = memory_tracing.spans
    assert done.parent is None
    assert hex_ids(done)[0] != TRACE


def test_consumer_span_is_child_of_and_linked_to_the_record_and_current(
    memory_tracing: MemoryTracing,
) -> None:
    assert current_trace_headers() is None
    with memory_tracing.consumer_span("deliver s", TRACEPARENT, "", {"webhookgw.sink": "s"}):
        memory_tracing.add_event("attempt failed", {"webhookgw.attempt": 1})
        headers = current_trace_headers()
    assert current_trace_headers() is None
    (done,) = memory_tracing.spans
    trace_id = hex_ids(done)[0]
    assert done.kind is SpanKind.CONSUMER
    assert trace_id == TRACE
    assert done.parent is not None
    assert f"{done.parent.span_id:016x}" == PARENT
    (link,) = done.links
    assert (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") == (TRACE, PARENT)
    assert [e.name for e in done.events] == ["attempt failed"]
    assert headers == (traceparent_of(done), "")


def test_consumer_span_of_a_record_without_trace_context_is_a_root(
    memory_tracing: MemoryTracing,
) -> None:
    with memory_tracing.consumer_span("deliver s", "", "", {}):
        pass
    (done,) = memory_tracing.spans
    assert done.parent is None
    assert done.links == ()


def test_an_exception_out_of_a_consumer_span_is_named_not_quoted(
    memory_tracing: MemoryTracing,
) -> None:
    with (
        pytest.raises(ValueError, match="s3cret"),
        memory_tracing.consumer_span("deliver s", TRACEPARENT, "", {}),
    ):
        raise ValueError("token s3cret leaked")
    (done,) = memory_tracing.spans
    assert done.status.status_code is StatusCode.ERROR
    assert done.status.description == "ValueError"
    assert dict(done.attributes or {}) == {"error.type": "ValueError"}
    assert done.events == ()
    assert "s3cret" not in repr((done.attributes, done.events, done.status.description))
