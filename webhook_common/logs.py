"""Logging set-up shared by both processes: one line per record, JSON or text.

Called once from each ``__main__``. JSON lines are what log pipelines want; text is
for a terminal. Secrets are kept out by construction (config holds them as
``SecretStr``, which prints as ``**********``); the handler's :class:`Redactor` is the
second line of defence: every secret the process was configured with is blanked out of
every line, whatever library wrote it (an exception message may quote a header value
or a URL).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from webhook_common.config import REDACTED
from webhook_common.errors import ConfigError

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


class Redactor:
    """Blanks out known secret values in text (a log line, an error kept in a record).

    Each secret is matched as written and as it appears inside a JSON string (quotes
    and backslashes escaped), so JSON log lines are covered too."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            # Short strings would redact ordinary words; real secrets are long.
            if len(secret) >= 6:
                forms.add(secret)
                forms.add(orjson.dumps(secret).decode()[1:-1])
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text


class _RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Redacts the whole formatted line — message, extra fields and traceback alike —
    whichever formatter is set on it."""

    _webhookgw = True

    def __init__(self, redact: Redactor) -> None:
        super().__init__(sys.stderr)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


def setup_logging(level: str, *, json_format: bool, secrets: Iterable[str]) -> None:
    """Configure the root logger once; safe to call again (replaces our handler).

    ``secrets``: every secret value the process holds (see
    :func:`webhook_common.config.secret_values`); required, so no process can forget."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_webhookgw", False):
            root.removeHandler(handler)
    handler = _RedactingHandler(Redactor(secrets))
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt at ERROR; keep them, but not at DEBUG volume.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.INFO))


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("json", "text")


def log_settings(
    level: str,
    fmt: str,
    *,
    where: str,
    env: Mapping[str, str] | None = None,
    cli_level: str | None = None,
    cli_format: str | None = None,
) -> tuple[str, str]:
    """The log level and format of a process, the same way on both sides: a command-line
    option wins, then ``LOG_LEVEL`` / ``LOG_FORMAT`` from the environment (what a
    container sets), then the config's ``<where>.log_level`` / ``<where>.log_format``.
    A value that is none of the choices is a :class:`ConfigError` naming where it came
    from."""
    env = os.environ if env is None else env
    chosen = []
    for key, cli, configured, choices in (
        ("log_level", cli_level, level, LEVELS),
        ("log_format", cli_format, fmt, FORMATS),
    ):
        variable = key.upper()
        if cli is not None:
            value, origin = cli, f"--{key.replace('_', '-')}"
        elif env.get(variable):
            value, origin = env[variable], variable
        else:
            value, origin = configured, f"{where}.{key}"
        normal = value.upper() if key == "log_level" else value.lower()
        if normal not in choices:
            raise ConfigError(f"{origin}: got {value!r}: expected one of {', '.join(choices)}")
        chosen.append(normal)
    return chosen[0], chosen[1]
