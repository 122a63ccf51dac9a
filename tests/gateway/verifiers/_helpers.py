"""Small builders shared by the verifier tests."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from gateway.verifiers import WebhookRequest


def make_request(headers: Mapping[str, str], body: bytes) -> WebhookRequest:
    """A POST as the gateway hands it to a verifier (header names lower-cased)."""
    return WebhookRequest(
        method="POST",
        url="https://hooks.example.com/webhooks/test",
        path="/webhooks/test",
        query_string="",
        headers={name.lower(): value for name, value in headers.items()},
        body=body,
    )


def secret_list(*values: str) -> list[SecretStr]:
    return [SecretStr(v) for v in values]


class FixedClock:
    """An injectable ``now`` that tests move by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
