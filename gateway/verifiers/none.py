"""No verification at all, for local development and trusted networks only.

Anyone who can reach the endpoint can write events, so the config must say so in
words: ``verifier: {type: none, insecure: true}``. Without it the config is refused, and
with it a warning is logged when the source is built (at startup).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from gateway.verifiers import Outgoing, Verified, WebhookRequest
from gateway.verifiers._common import own_config
from webhook_common.config import StrictModel

log = logging.getLogger(__name__)

# Verified.secret_index when no secret was involved; operators see "-1" in the rotation
# metric for such a source instead of a misleading "0".
NO_SECRET = -1


class NoVerifierConfig(StrictModel):
    """``verifier: {type: none, insecure: true}``."""

    # validate_default: an omitted key must fail too, and name `insecure`.
    insecure: bool = Field(default=False, validate_default=True)

    @field_validator("insecure")
    @classmethod
    def _must_be_true(cls, value: bool) -> bool:
        if not value:
            raise PydanticCustomError(
                "insecure_required",
                "true: the none verifier accepts unsigned requests from anyone, "
                "so it must be enabled explicitly with insecure: true",
            )
        return value


class NoVerifier:
    """Accepts every request; event id and type are left to the gateway."""

    Config: ClassVar[type[BaseModel]] = NoVerifierConfig

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None:
        own_config(config, NoVerifierConfig)  # its validator is the `insecure: true` check
        log.warning(
            "verifier 'none' (insecure: true): requests on this source are accepted "
            "without any signature check%s",
            "; its configured secrets are ignored" if secrets else "",
        )

    signing_schemes: ClassVar[tuple[str, ...]] = ()
    event_type_header = None

    def sign(self, request: Outgoing) -> dict[str, str]:
        return {}

    def verify(self, request: WebhookRequest) -> Verified:
        return Verified(secret_index=NO_SECRET)
