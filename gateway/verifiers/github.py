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
from gateway.verifiers._common import BodySignature, new_id, own_config, utf8_secrets
from webhook_common.config import StrictModel

SCHEME = BodySignature(
    header="x-hub-signature-256",
    prefix="sha256=",
    encoding="hex",
    id_header="x-github-delivery",
    type_header="x-github-event",
)
HEADER = SCHEME.header


class GitHubConfig(StrictModel):
    """``verifier: {type: github}`` (no options)."""


class GitHubVerifier:
    """Verifies ``X-Hub-Signature-256``."""

    Config: ClassVar[type[BaseModel]] = GitHubConfig

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None:
        own_config(config, GitHubConfig)
        self._keys = utf8_secrets(secrets, "github")

    signing_schemes: ClassVar[tuple[str, ...]] = ()
    event_type_header = SCHEME.type_header

    def sign(self, request: Outgoing) -> dict[str, str]:
        return sign(request.body, request.secret, delivery=new_id(), event=request.event_type)

    def verify(self, request: WebhookRequest) -> Verified:
        return SCHEME.verify(self._keys, request)


def sign(
    body: bytes, secret: str, *, delivery: str | None = None, event: str | None = None
) -> dict[str, str]:
    """The headers GitHub would send for ``body`` (delivery/event only when given)."""
    return SCHEME.sign(body, secret, event_id=delivery, event_type=event)
