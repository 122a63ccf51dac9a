"""Signature verifiers: one per provider scheme, swappable per source.

A verifier is a class registered under the entry-point group ``webhook_gateway.verifiers``
(built-ins register through the same group as third-party ones, see ``pyproject.toml``).
The class has a pydantic ``Config`` model for its section of the source config and is
built once at startup as ``cls(config, secrets)``; ``verify`` then runs on the hot path
for every request, so it must be synchronous CPU work with no I/O.

A verifier may also sign (:class:`Signing`): given a secret it produces the headers the
provider would send, so ``gateway send`` and tests can make deliveries it accepts. The
built-ins all do; a plugin that does is signed by ``send`` the same way.

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

from webhook_common.config import ConfigPath
from webhook_common.errors import WebhookGatewayError

__all__ = [
    "ENTRY_POINT_GROUP",
    "ConfigPath",
    "Outgoing",
    "Signing",
    "VerificationError",
    "Verified",
    "Verifier",
    "WebhookRequest",
]

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
    from ``public_url`` or trusted forwarding headers; its path, and ``path``, are the
    path as sent (percent-escapes not decoded), the one the source was routed by.
    ``headers`` has lower-cased names; a repeated header keeps its first value.
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
    ``event_id_signed``: the signature covers ``event_id`` (it is in the signed content),
    so a replay cannot give it a fresh one; when False the gateway deduplicates by a
    digest of the signed content instead and keeps ``event_id`` beside it.
    """

    secret_index: int
    event_id: str | None = None
    event_type: str | None = None
    event_id_signed: bool = False


@runtime_checkable
class Verifier(Protocol):
    """The verifier plugin interface."""

    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None: ...

    def verify(self, request: WebhookRequest) -> Verified:
        """Return :class:`Verified` or raise :class:`VerificationError`."""
        ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request to sign as the provider would.

    ``url`` is the URL as the gateway reconstructs it for ``verify``; ``secret`` the
    configured secret to sign with (``""`` for a source without secrets); ``event_type``
    is given only when the scheme carries it in a header (:attr:`Signing.event_type_header`);
    ``scheme`` picks one of :attr:`Signing.signing_schemes` (``None``: the default).
    """

    method: str
    url: str
    body: bytes
    secret: str
    event_type: str | None = None
    scheme: str | None = None


@runtime_checkable
class Signing(Protocol):
    """Optional capability of a verifier: sign requests the way its provider does.

    ``signing_schemes``: the names ``Outgoing.scheme`` may take when the verifier accepts
    more than one kind of signature (empty: one kind only). ``event_type_header``: the
    header the scheme carries the event type in, or ``None`` (the event type then travels
    as the path's last segment). ``sign`` returns the headers to add and raises
    :class:`~webhook_common.errors.ConfigError` when it cannot sign as asked.
    """

    signing_schemes: ClassVar[tuple[str, ...]]

    @property
    def event_type_header(self) -> str | None: ...

    def sign(self, request: Outgoing) -> dict[str, str]: ...
