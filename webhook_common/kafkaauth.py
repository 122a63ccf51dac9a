"""How the Kafka clients encrypt and authenticate: aiokafka's arguments from
:class:`~webhook_common.config.KafkaSettings`.

TLS: aiokafka refuses ``SSL`` and ``SASL_SSL`` without an ``ssl_context``; the one built
here trusts the system's CA store (managed clusters - Confluent Cloud, MSK, Redpanda
Cloud - present publicly trusted certificates), or only ``ssl_cafile`` when set (a
private CA), and checks the broker's hostname unless ``ssl_check_hostname`` is false.

``OAUTHBEARER`` tokens come from a token provider plugin (entry-point group
``webhook_gateway.kafka_token_providers``, loaded like verifiers and sinks). The
built-in ``file`` provider reads a token file at every request for a token, so whatever
renews the file (a sidecar, a projected service-account token, a cron job) is picked up
without a restart. A provider is a class with a pydantic ``Config`` and
``async def token() -> str``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from webhook_common.config import REDACTED, ConfigPath, StrictModel, format_path
from webhook_common.errors import ConfigError
from webhook_common.plugins import PluginKind, Registry

if TYPE_CHECKING:
    from webhook_common.config import KafkaSettings

log = logging.getLogger(__name__)

TOKEN_PROVIDERS = PluginKind(
    noun="Kafka token provider",
    group="webhook_gateway.kafka_token_providers",
    methods={"token": True},
)


class FileTokenConfig(StrictModel):
    path: ConfigPath


class FileTokenProvider:
    """The token is the content of ``path`` (surrounding whitespace removed), read again
    at each request, so a renewed file is used from the next connection on."""

    Config: ClassVar[type[FileTokenConfig]] = FileTokenConfig

    def __init__(self, config: FileTokenConfig) -> None:
        self.path = config.path

    async def token(self) -> str:
        text = await asyncio.to_thread(self.path.read_text, encoding="utf-8")
        token = text.strip()
        if not token:
            raise ValueError(f"the Kafka token file {str(self.path)!r} is empty")
        return token


class _Provider(AbstractTokenProvider):  # type: ignore[misc]
    """Adapts a plugin to aiokafka's token provider interface."""

    def __init__(self, plugin: Any) -> None:
        self._plugin = plugin

    async def token(self) -> str:
        token: str = await self._plugin.token()
        return token


def token_provider(
    kafka: KafkaSettings, registry: Registry[Any] | None = None
) -> AbstractTokenProvider:
    options = dict(kafka.sasl_oauth or {})
    name = str(options.pop("type", ""))
    registry = registry if registry is not None else Registry(TOKEN_PROVIDERS)
    plugin = registry.build(
        name,
        options,
        ("kafka", "sasl_oauth"),
        lambda cls, cfg: cls(cfg),
        config_dir=kafka.config_dir,
    )
    return _Provider(plugin)


def _file_problem(key: str, value: str, what: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"{format_path(['kafka', key])}: got {value!r}: expected {what} ({type(exc).__name__}: "
        f"{exc})"
    )


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The TLS context every client of the process shares the settings of."""
    try:
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise _file_problem(
            "ssl_cafile", str(kafka.ssl_cafile), "a readable PEM file of CA certificates", exc
        ) from None
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile is not None:
        password = kafka.ssl_key_password
        try:
            context.load_cert_chain(
                kafka.ssl_certfile,
                kafka.ssl_keyfile,
                password.get_secret_value() if password is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            # Which of the two files (or the key's password) is wrong is not said by
            # OpenSSL reliably; the message names both keys, never the password.
            raise ConfigError(
                f"kafka.ssl_certfile: got {str(kafka.ssl_certfile)!r} (kafka.ssl_keyfile: "
                f"{_text(kafka.ssl_keyfile)!r}): expected a readable PEM client certificate and "
                f"the key that belongs to it, with kafka.ssl_key_password if the key is "
                f"encrypted ({type(exc).__name__}: {exc})"
            ) from None
    return context


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    mechanism = kafka.sasl_mechanism
    if mechanism == "OAUTHBEARER":
        kwargs["sasl_mechanism"] = mechanism
        kwargs["sasl_oauth_token_provider"] = token_provider(kafka)
    elif mechanism is not None:
        kwargs["sasl_mechanism"] = mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        password = kafka.sasl_password
        kwargs["sasl_plain_password"] = password.get_secret_value() if password else None
    if kafka.security_protocol.endswith("SSL"):
        kwargs["ssl_context"] = ssl_context(kafka)
    return kwargs


# A broker's answer that waiting will not change: the credentials, the mechanism or the
# TLS certificate is wrong. Anything else (refused, timed out) is an outage.
_REFUSALS: tuple[type[BaseException], ...] = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            hosts.append((host.strip("[]"), int(port)))
    return hosts


def _refused(kafka: KafkaSettings, where: str, exc: BaseException) -> ConfigError:
    why = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "hostname" in str(exc).lower() or "IP address mismatch" in str(exc):
            return ConfigError(
                f"kafka.bootstrap_servers: got {kafka.bootstrap_servers!r}: expected names "
                f"the broker's certificate at {where} is for ({why}; "
                "kafka.ssl_check_hostname: false turns the check off)"
            )
        cafile = "missing" if kafka.ssl_cafile is None else f"got {str(kafka.ssl_cafile)!r}"
        return ConfigError(
            f"kafka.ssl_cafile: {cafile}: expected the CA that signed the certificate of the "
            f"broker at {where} ({why})"
        )
    if isinstance(exc, ssl.SSLError):
        return ConfigError(
            f"kafka.security_protocol: got {kafka.security_protocol!r}: the broker at {where} "
            f"did not complete a TLS handshake ({why}; is that listener TLS?)"
        )
    if kafka.sasl_mechanism == "OAUTHBEARER":
        return ConfigError(
            f"kafka.sasl_oauth: the broker at {where} refused the token ({why}): expected a "
            "token the cluster accepts"
        )
    return ConfigError(
        f"kafka.sasl_password: got {REDACTED}: the broker at {where} refused user "
        f"{kafka.sasl_username!r} with {kafka.sasl_mechanism} ({why}): expected the "
        "credentials of a user the cluster knows (kafka.sasl_username, kafka.sasl_password, "
        "kafka.sasl_mechanism)"
    )


async def check_access(kafka: KafkaSettings) -> None:
    """Connect to the bootstrap servers as the clients will (TLS, SASL), until one lets
    us in. :class:`ConfigError` naming the key when a broker refused the credentials or
    its certificate did not verify: a restart will not fix that. ``KafkaConnectionError``
    when none could be reached: an outage, to wait out."""
    kwargs = client_kwargs(kafka)
    failures: list[str] = []
    for host, port in _hosts(kafka.bootstrap_servers):
        try:
            conn = await create_conn(
                host,
                port,
                client_id=kwargs["client_id"],
                request_timeout_ms=kwargs["request_timeout_ms"],
                ssl_context=kwargs.get("ssl_context"),
                security_protocol=kwargs["security_protocol"],
                sasl_mechanism=kwargs.get("sasl_mechanism"),
                sasl_plain_username=kwargs.get("sasl_plain_username"),
                sasl_plain_password=kwargs.get("sasl_plain_password"),
                sasl_oauth_token_provider=kwargs.get("sasl_oauth_token_provider"),
            )
        except _REFUSALS as exc:
            raise _refused(kafka, f"{host}:{port}", exc) from None
        except ssl.SSLError as exc:  # before OSError, which it is
            raise _refused(kafka, f"{host}:{port}", exc) from None
        except (OSError, KafkaError, TimeoutError) as exc:
            failures.append(f"{host}:{port}: {type(exc).__name__}: {exc}")
            continue
        conn.close()
        return
    raise KafkaConnectionError("no bootstrap server answered: " + "; ".join(failures))


# Back-off between connection attempts while Kafka cannot be reached at startup.
CONNECT_BACKOFF_MAX = 10.0


async def connect(
    kafka: KafkaSettings,
    start: Callable[[], Awaitable[None]],
    what: str,
    *,
    first_delay: float = 0.5,
) -> None:
    """Run ``start`` once Kafka lets us in, trying again with back-off while it cannot be
    reached (the process serves meanwhile, not ready). A refusal that waiting will not
    fix (:class:`ConfigError`) is logged at each attempt, as the outage is, since a
    cluster being set up may still be getting its users; cancel the task to give up."""
    delay = first_delay
    attempts = 0
    while True:
        await asyncio.sleep(delay)
        attempts += 1
        try:
            await check_access(kafka)
            await start()
        except ConfigError as exc:
            log.error("%s: Kafka refused the connection: %s", what, exc)
        except (KafkaError, OSError, TimeoutError) as exc:
            if attempts == 1 or attempts % 10 == 0:
                log.warning(
                    "%s: Kafka at %r is still unreachable (%s); trying again",
                    what,
                    kafka.bootstrap_servers,
                    type(exc).__name__,
                )
        else:
            log.info("%s: connected to Kafka at %r", what, kafka.bootstrap_servers)
            return
        delay = min(delay * 2, CONNECT_BACKOFF_MAX)
