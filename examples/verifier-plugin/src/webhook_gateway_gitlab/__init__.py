"""GitLab's secret token as a webhook-gateway verifier plugin.

GitLab sends the token configured on the webhook verbatim in ``X-Gitlab-Token``
(https://docs.gitlab.com/user/project/integrations/webhooks/). There is no signature over
the body, so this proves only that the sender knows the token; prefer an HMAC scheme
where the provider offers one.

A plugin needs nothing but the public interface in :mod:`gateway.verifiers`: a class
with a pydantic ``Config`` model, ``__init__(config, secrets)`` and ``verify(request)``
that returns :class:`Verified` or raises :class:`VerificationError`, never anything else.
The optional ``sign(request)`` (the :class:`Signing` capability) lets ``python -m gateway
send`` make deliveries this verifier accepts.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

from gateway.verifiers import Outgoing, VerificationError, Verified, WebhookRequest

__all__ = ["GitLabTokenConfig", "GitLabTokenVerifier"]


class GitLabTokenConfig(BaseModel):
    """``verifier: {type: gitlab-token}``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str = "X-Gitlab-Token"


class GitLabTokenVerifier:
    """Accepts a request whose token header equals one of the configured secrets."""

    Config: ClassVar[type[BaseModel]] = GitLabTokenConfig

    # `config` is typed as the Protocol has it; the gateway always passes an instance of
    # `Config`, validated from the source's options.
    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None:
        if not isinstance(config, GitLabTokenConfig):
            raise TypeError(f"expected GitLabTokenConfig, got {type(config).__name__}")
        tokens = [s.get_secret_value().encode() for s in secrets]
        if not tokens or not all(tokens):
            # Raised at startup; the gateway reports it as a config error for this source.
            raise ValueError("secrets: expected at least one non-empty token")
        self._tokens = tokens
        self._header = config.header.lower()  # the gateway lower-cases header names

    signing_schemes: ClassVar[tuple[str, ...]] = ()
    event_type_header = "x-gitlab-event"

    def sign(self, request: Outgoing) -> dict[str, str]:
        headers = {self._header: request.secret, "x-gitlab-event-uuid": str(uuid.uuid4())}
        if request.event_type is not None:
            headers["x-gitlab-event"] = request.event_type
        return headers

    def verify(self, request: WebhookRequest) -> Verified:
        presented = request.headers.get(self._header)
        if not presented:
            raise VerificationError("missing", f"{self._header} header is missing")
        try:
            value = presented.encode("latin-1")  # the bytes as sent on the wire
        except UnicodeEncodeError:
            raise VerificationError("malformed", f"{self._header} is not a token") from None
        matched = -1
        for index, token in enumerate(self._tokens):  # no early exit: constant time
            if hmac.compare_digest(token, value) and matched < 0:
                matched = index
        if matched < 0:
            raise VerificationError("mismatch", f"{self._header} matches no configured secret")
        return Verified(
            secret_index=matched,
            event_id=request.headers.get("x-gitlab-event-uuid") or None,
            event_type=request.headers.get("x-gitlab-event") or None,
        )
