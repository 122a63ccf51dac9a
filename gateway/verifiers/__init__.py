"""Signature verifiers: one per provider scheme, swappable per source.

A verifier is a class registered under the entry-point group ``webhook_gateway.verifiers``
(built-ins register through the same group as third-party ones, see ``pyproject.toml``).
The class has a pydantic ``Config`` model for its section of the source config and is
built once at startup as ``cls(config, secrets)``; ``verify`` then runs on the hot path
for every request, so it must be synchronous CPU work with no I/O.

Verifiers fail closed: anything unexpected in a request ends as
:class:`VerificationError` (a 401), never as another exception. The gateway wraps calls
anyway and counts any stray exception as reason ``internal``, but a verifier that lets
one escape has a bug.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, SecretStr

from webhook_common.errors import WebhookGatewayError

ENTRY_POINT_GROUP = "webhook_gateway.verifiers"


class VerificationError(WebhookGatewayError):
    """The request is not proven to come from the provider: answered 401.

    ``reason`` is a short fixed label used in metrics (never derived from input):
    ``missing`` (no signature header), ``malformed`` (header cannot be parsed),
    ``mismatch`` (no secret produced the signature), ``expired`` / ``future``
    (timestamp outside the tolerance), ``claims`` (a JWT claim such as tenant,
    issuer or audience is wrong).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What a verifier sees of one request.

    ``url`` is the public URL the provider called (scheme, host, path, query), resolved
    from ``public_url`` or trusted forwarding headers. ``headers`` has lower-cased names;
    a repeated header keeps its first value.
    """

    method: str
    url: str
    path: str
    query_string: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Verified:
    """A successful verification.

    ``secret_index`` is which configured secret matched (rotation metric);
    ``event_id`` / ``event_type`` are the provider's delivery id and event type when
    the scheme carries them (else None, and the gateway derives them).
    """

    secret_index: int
    event_id: str | None = None
    event_type: str | None = None


@runtime_checkable
class Verifier(Protocol):
    """The verifier plugin interface."""

    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None: ...

    def verify(self, request: WebhookRequest) -> Verified:
        """Return :class:`Verified` or raise :class:`VerificationError`."""
        ...
