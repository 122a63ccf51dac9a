"""One error hierarchy for the whole product.

Errors are classified by attributes, as aiokafka does, so callers decide what to do
without matching on types: ``retriable`` says whether the same operation may succeed
when tried again later.
"""

from __future__ import annotations


class WebhookGatewayError(Exception):
    """Base of every error this product raises on purpose."""

    retriable: bool = False


class ConfigError(WebhookGatewayError):
    """The configuration is invalid. The message names the key path, the value and
    what was expected (a secret's value is never shown)."""


class ContractError(WebhookGatewayError):
    """A Kafka record does not follow the contract in :mod:`webhook_common.contract`."""


class StartupError(WebhookGatewayError):
    """A process cannot start (port in use, a service unreachable); the message says which."""
