"""Shopify (https://shopify.dev/docs/apps/build/webhooks/verify-deliveries).

``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`` keyed with the app's client
secret. Event id and type come from ``X-Shopify-Webhook-Id`` and ``X-Shopify-Topic``.

Shopify rotates a client secret over up to an hour, so list the new secret before the old
one goes. Like GitHub the scheme signs no timestamp: there is no replay window, only
deduplication by webhook id (which is not signed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, SecretStr

from gateway.verifiers import Outgoing, Verified, WebhookRequest
from gateway.verifiers._common import BodySignature, new_id, own_config, utf8_secrets
from webhook_common.config import StrictModel

SCHEME = BodySignature(
    header="x-shopify-hmac-sha256",
    encoding="base64",
    id_header="x-shopify-webhook-id",
    type_header="x-shopify-topic",
)
HEADER = SCHEME.header


class ShopifyConfig(StrictModel):
    """``verifier: {type: shopify}`` (no options)."""


class ShopifyVerifier:
    """Verifies ``X-Shopify-Hmac-Sha256``."""

    Config: ClassVar[type[BaseModel]] = ShopifyConfig

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None:
        own_config(config, ShopifyConfig)
        self._keys = utf8_secrets(secrets, "shopify")

    signing_schemes: ClassVar[tuple[str, ...]] = ()
    event_type_header = SCHEME.type_header

    def sign(self, request: Outgoing) -> dict[str, str]:
        return sign(request.body, request.secret, webhook_id=new_id(), topic=request.event_type)

    def verify(self, request: WebhookRequest) -> Verified:
        return SCHEME.verify(self._keys, request)


def sign(
    body: bytes, secret: str, *, webhook_id: str | None = None, topic: str | None = None
) -> dict[str, str]:
    """The headers Shopify would send for ``body`` (id/topic only when given)."""
    return SCHEME.sign(body, secret, event_id=webhook_id, event_type=topic)
