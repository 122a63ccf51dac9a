"""Logging set-up shared by both processes: one line per record, JSON or text.

Called once from each ``__main__``. JSON lines are what log pipelines want; text is
for a terminal. Secrets are kept out by construction (config holds them as
``SecretStr``, which prints as ``**********``); :class:`RedactingFilter` is the second
line of defence for values that are known secrets at startup.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

_STD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class RedactingFilter(logging.Filter):
    """Replaces any occurrence of a known secret in a formatted message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Short strings would redact ordinary words; real secrets are long.
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "<redacted>")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(
    level: str = "INFO", *, json_format: bool = True, secrets: Iterable[str] = ()
) -> None:
    """Configure the root logger once; safe to call again (replaces our handler)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_webhookgw", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._webhookgw = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter(secrets))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt at ERROR; keep them, but not at DEBUG volume.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.INFO))
