"""How every command line of the product ends: exit statuses and one-line errors.

Errors a user can fix end as ``error: ...`` on stderr, never as a traceback. Exit status
2 means the configuration or the command line is wrong (:class:`ConfigError`), 1 that
something failed at run time (any other :class:`WebhookGatewayError`), 130 an interrupt.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from webhook_common.errors import ConfigError, WebhookGatewayError

__all__ = [
    "CONFIG_ENV",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "add_config_option",
    "exit_status",
]

# Every command of both processes reads its config file from --config, else from this
# environment variable (what a container or a shell profile sets once).
CONFIG_ENV = "WEBHOOK_GATEWAY_CONFIG"

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def exit_status(command: Callable[[], int]) -> int:
    """Run ``command`` and map how it ended to an exit status (see the module docstring)."""
    try:
        return command()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except WebhookGatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def add_config_option(parser: argparse.ArgumentParser, fallback: str | None = None) -> None:
    """``--config PATH``, defaulting to ``$WEBHOOK_GATEWAY_CONFIG``, then to ``fallback``
    when that file exists (the quick start's, for ``send``); required when neither is."""
    default = os.environ.get(CONFIG_ENV) or None
    if default is None and fallback is not None and os.path.isfile(fallback):
        default = fallback
    where = f"${CONFIG_ENV}" + (f", else {fallback}" if fallback else "")
    parser.add_argument(
        "--config",
        metavar="PATH",
        required=default is None,
        default=default,
        help=f"the YAML config file (default: {where})",
    )
