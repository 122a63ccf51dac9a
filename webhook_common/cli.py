"""How every command line of the product ends: exit statuses and one-line errors.

Errors a user can fix end as ``error: ...`` on stderr, never as a traceback. Exit status
2 means the configuration or the command line is wrong (:class:`ConfigError`), 1 that
something failed at run time (any other :class:`WebhookGatewayError`), 130 an interrupt.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from webhook_common.errors import ConfigError, WebhookGatewayError

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "exit_status"]

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
