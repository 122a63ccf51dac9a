"""GitHub (https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries).

``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` keyed with the webhook
secret. The legacy SHA-1 ``X-Hub-Signature`` is not accepted. Event id and type come
from ``X-GitHub-Delivery`` and ``X-GitHub-Event``.

The scheme signs no timestamp, so there is no replay window: a captured delivery stays
valid, and only deduplication by delivery id stops a replay. The delivery id header is
not signed either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, SecretStr

from gateway.verifiers import Outgoing, Verified, WebhookRequest
from gateway.verifiers._common import (
    decode_digest,
    fail,
    hmac_digest,
    match_secret,
    new_id,
    optional_header,
    own_config,
    required_header,
    utf8_secrets,
)
from webhook_common.config import StrictModel

HEADER = "x-hub-signature-256"
PREFIX = "sha256="


class GitHubConfig(StrictModel):
    """``verifier: {type: github}`` (no options)."""


class GitHubVerifier:
    """Verifies ``X-Hub-Signature-256``."""

    Config: ClassVar[type[BaseModel]] = GitHubConfig

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None:
        own_config(config, GitHubConfig)
        self._keys = utf8_secrets(secrets, "github")

    signing_schemes: ClassVar[tuple[str, ...]] = ()
    event_type_header = "x-github-event"

    def sign(self, request: Outgoing) -> dict[str, str]:
        return sign(request.body, request.secret, delivery=new_id(), event=request.event_type)

    def verify(self, request: WebhookRequest) -> Verified:
        header = required_header(request.headers, HEADER)
        if not header.startswith(PREFIX):
            raise fail("malformed", f"{HEADER} does not start with {PREFIX!r}")
        signature = decode_digest(
            header.removeprefix(PREFIX), encoding="hex", algorithm="sha256", what=HEADER
        )
        index = match_secret(self._keys, request.body, [signature], what=HEADER)
        return Verified(
            secret_index=index,
            event_id=optional_header(request.headers, "x-github-delivery"),
            event_type=optional_header(request.headers, "x-github-event"),
        )


def sign(
    body: bytes, secret: str, *, delivery: str | None = None, event: str | None = None
) -> dict[str, str]:
    """The headers GitHub would send for ``body`` (delivery/event only when given)."""
    headers = {HEADER: PREFIX + hmac_digest(secret.encode(), body).hex()}
    if delivery is not None:
        headers["x-github-delivery"] = delivery
    if event is not None:
        headers["x-github-event"] = event
    return headers
