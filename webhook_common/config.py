"""Loading the one YAML configuration file that gateway and consumers share.

Each side validates the sections it owns with its own pydantic models (the gateway
``kafka``, ``gateway`` and ``sources``; the consumers ``kafka`` and ``consumers``)
and ignores the rest. What both need lives here:

* ``${VAR}`` and ``${VAR:-default}`` interpolation in string values, so secrets and
  addresses come from the environment (``$${`` is a literal ``${``);
* :func:`validate`, which turns a pydantic ``ValidationError`` into a
  :class:`~webhook_common.errors.ConfigError` whose lines name the key path, the value
  (redacted when it is a secret) and what was expected;
* :data:`ConfigPath`, the type of every key that names a file or directory: a relative
  value is taken from the directory of the config file it was written in;
* :class:`KafkaSettings`, the client settings both sides use.

Nothing here reads configuration at import time: ``__main__`` of each side calls
:func:`load_file` once and passes the result down.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from webhook_common.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

_VAR = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")

# A value under a key whose name contains one of these is never printed.
_SECRET_WORDS = ("secret", "password", "token", "credential", "private", "apikey", "api_key")
REDACTED = "<redacted>"

# Every top-level section of the shared file. Each process reads some of them; a key
# outside this set is a typo that would otherwise be ignored by both.
SECTIONS = ("kafka", "topics", "gateway", "sources", "consumers")


def is_secret_key(path: Sequence[str | int]) -> bool:
    """Whether a value at this key path must not be shown (any segment names a secret)."""
    return any(
        isinstance(seg, str) and any(w in seg.lower() for w in _SECRET_WORDS) for seg in path
    )


def format_path(path: Sequence[str | int]) -> str:
    """``sources[0].secrets[1]`` style, as users see it in the YAML."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else seg
    return out or "<root>"


def interpolate(data: Any, env: Mapping[str, str], path: tuple[str | int, ...] = ()) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a YAML document."""
    if isinstance(data, dict):
        return {k: interpolate(v, env, (*path, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env, (*path, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def repl(m: re.Match[str]) -> str:
        if m.group(1):  # $${...} escapes interpolation
            return m.group(0)[1:]
        name, default = m.group(2), m.group(3)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            raise ConfigError(
                f"{format_path(path)}: ${{{name}}} is not set: expected the environment "
                f"variable {name} to be set (or write ${{{name}:-default}})"
            )
        return value

    return _VAR.sub(repl, data)


def load_file(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    sections: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Read, parse and interpolate a config file. Raises :class:`ConfigError`.

    With ``sections``, only those top-level keys are kept and interpolated: the other
    side's sections may name variables (a verifier secret, a database URL) that this
    process's environment rightly lacks.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(p)!r}: <root>: got a {type(data).__name__}: expected a mapping"
        )
    unknown = [str(k) for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"config file {str(p)!r}: {unknown[0]}: no such section: expected one of "
            + ", ".join(SECTIONS)
        )
    if sections is not None:
        data = {k: v for k, v in data.items() if k in sections}
    result: dict[str, Any] = interpolate(data, os.environ if env is None else env)
    return result


# The password of a URL's userinfo (postgresql://user:pw@host/db, redis://:pw@host).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")


def _parts(annotation: Any) -> list[Any]:
    """``annotation`` with ``Optional``, unions and ``Annotated`` taken apart."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _parts(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [part for arg in typing.get_args(annotation) for part in _parts(arg)]
    return [annotation]


def _holds_secret(annotation: Any, depth: int = 0) -> bool:
    """Whether a value of this type is or contains a ``SecretStr``."""
    if depth > 8:
        return False
    for part in _parts(annotation):
        if part is SecretStr:
            return True
        if isinstance(part, type) and issubclass(part, BaseModel):
            fields = part.model_fields.values()
            if any(_holds_secret(f.annotation, depth + 1) for f in fields):
                return True
        elif any(_holds_secret(arg, depth + 1) for arg in typing.get_args(part)):
            return True
    return False


def _declared_at(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    """The declared type of what sits at ``loc`` in ``model``, or None when unknown."""
    current: Any = model
    for seg in loc:
        found: Any = None
        for part in _parts(current):
            if isinstance(part, type) and issubclass(part, BaseModel):
                field = part.model_fields.get(seg) if isinstance(seg, str) else None
                found = field.annotation if field is not None else None
            elif typing.get_origin(part) in (dict, Mapping):
                found = typing.get_args(part)[1]
            elif typing.get_origin(part) in (list, tuple, Sequence) and isinstance(seg, int):
                found = typing.get_args(part)[0]
            if found is not None:
                break
        if found is None:
            return None
        current = found
    return current


def _show(value: Any, path: Sequence[str | int], secret: bool = False) -> str:
    if secret or is_secret_key(path) or isinstance(value, SecretStr):
        return REDACTED
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def secret_values(data: Any, path: tuple[str | int, ...] = ()) -> list[str]:
    """Every secret value in a config tree (models, mappings, lists), for the log redactor:
    ``SecretStr`` values, strings under a key that names a secret, and the password of
    any URL (a DSN, a Redis URL), wherever it sits."""
    if isinstance(data, SecretStr):
        return [*secret_values(data.get_secret_value(), path), data.get_secret_value()]
    if isinstance(data, BaseModel):
        return [
            v
            for name in type(data).model_fields
            for v in secret_values(getattr(data, name), (*path, name))
        ]
    if isinstance(data, Mapping):
        return [v for k, item in data.items() for v in secret_values(item, (*path, str(k)))]
    if isinstance(data, list | tuple):
        return [v for i, item in enumerate(data) for v in secret_values(item, (*path, i))]
    if isinstance(data, str):
        found = [m.group(1) for m in _URL_USERINFO_PASSWORD.finditer(data)]
        return [data, *found] if is_secret_key(path) else found
    return []


_URL_USERINFO_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:([^@\s]+)@")


def _lookup(data: Any, path: Sequence[str | int]) -> tuple[bool, Any]:
    cur = data
    for seg in path:
        try:
            cur = cur[seg]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, cur


def validate(
    model: type[M],
    data: Mapping[str, Any],
    *,
    source: str = "config",
    at: Sequence[str | int] = (),
    config_dir: Path | None = None,
) -> M:
    """Validate ``data`` against ``model``; every problem becomes one line of a
    :class:`ConfigError` naming key path, value and expectation. ``at`` is where ``data``
    sits in the file (``consumers.sinks.out``), so paths read as the user wrote them.
    ``config_dir`` is the directory of that file: relative :data:`ConfigPath` values are
    taken from it (without it, from the working directory)."""
    context = {_CONFIG_DIR: config_dir} if config_dir is not None else None
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = [seg for seg in err["loc"] if isinstance(seg, str | int)]
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, Invalid):
                loc.append(cause.key)
            path = [*at, *loc]
            found, value = _lookup(data, loc)
            # Input meant for a SecretStr (or a structure holding one) is never shown,
            # whatever its key is called: a header named Authorization, say.
            secret = _holds_secret(_declared_at(model, loc))
            got = f"got {_show(value, path, secret)}" if found else "missing"
            expected = str(cause) if isinstance(cause, Invalid) else err["msg"]
            if err["type"] == "extra_forbidden":
                expected = "no such key (check spelling)"
            lines.append(
                f"{format_path(path)}: {got}: expected {expected[0].lower()}{expected[1:]}"
            )
        plural = "s" if len(lines) > 1 else ""
        raise ConfigError(
            f"{source}: {len(lines)} invalid value{plural}:\n  " + "\n  ".join(lines)
        ) from None


# The key of the pydantic validation context that carries the config file's directory.
_CONFIG_DIR = "webhook_gateway.config_dir"


def config_dir_of(path: str | Path) -> Path:
    """The directory relative paths in the config file ``path`` are taken from: the
    file's own directory as named (a symlinked file, such as a Kubernetes ConfigMap
    key, finds its neighbours beside the link), made absolute now, so a later change
    of working directory changes nothing."""
    return Path(path).absolute().parent


def _context_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    found = context.get(_CONFIG_DIR) if isinstance(context, Mapping) else None
    return found if isinstance(found, Path) else None


def _from_config_dir(value: Path, info: ValidationInfo) -> Path:
    if str(value).startswith("~"):
        try:
            return value.expanduser()
        except RuntimeError:  # no home directory known for that user
            raise ValueError("a path whose '~' names a user with a home directory") from None
    base = _context_dir(info)
    if base is None or value.is_absolute():
        return value
    return base / value


# A file or directory named in the config. Relative: from the directory of the config
# file, so the file means the same whatever directory the process starts in (a container
# runs it from its WORKDIR, a service manager from /); `~` is the user's home; absolute
# values stay as written. The rule applies to the value after `${VAR}` substitution:
# a relative path that comes from the environment is relative to the file as well.
# Defaults are not rebased: a default is not written in any file.
ConfigPath = Annotated[Path, AfterValidator(_from_config_dir)]


class RemembersConfigDir(BaseModel):
    """A model that builds plugins later from options it holds (a token provider, a
    verifier): it keeps the directory of the file it was validated from, so the
    plugin's :data:`ConfigPath` options follow the same rule (``config_dir`` is None
    for a model built in code)."""

    _config_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _remember_config_dir(self, info: ValidationInfo) -> Self:
        self._config_dir = _context_dir(info)
        return self

    @property
    def config_dir(self) -> Path | None:
        return self._config_dir


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Invalid(ValueError):
    """Raised by a model validator about one of its own keys: :func:`validate` reports
    it at ``<model path>.<key>`` with that key's value, as a field error would be."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(expected)
        self.key = key


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


class KafkaSettings(StrictModel, RemembersConfigDir):
    """Kafka client settings shared by gateway and consumers (YAML section ``kafka``).

    TLS (``SSL``, ``SASL_SSL``) verifies the brokers against the system's CA store, or
    against ``ssl_cafile`` alone when set, with hostname checking on; a client
    certificate (``ssl_certfile`` + ``ssl_keyfile``) adds mutual TLS. SASL takes a user
    and password (``PLAIN``, ``SCRAM-*``) or, for ``OAUTHBEARER``, a token provider
    plugin (``sasl_oauth``: ``type: file`` reads a token file that something else keeps
    fresh). :mod:`webhook_common.kafkaauth` turns these into the clients' arguments."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    client_id: str = "webhook-gateway"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # OAUTHBEARER: {"type": <token provider plugin>, ...its options}.
    sasl_oauth: dict[str, Any] | None = None
    ssl_cafile: ConfigPath | None = None
    ssl_certfile: ConfigPath | None = None
    ssl_keyfile: ConfigPath | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(default=30_000, ge=1_000)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        protocol = self.security_protocol
        sasl = protocol.startswith("SASL_")
        tls = protocol.endswith("SSL")
        if sasl and self.sasl_mechanism is None:
            raise Invalid(
                "sasl_mechanism",
                f"one of {', '.join(SASL_MECHANISMS)} when security_protocol is {protocol!r}",
            )
        if not sasl:
            for key in ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_oauth"):
                if getattr(self, key) is not None:
                    raise Invalid(
                        key,
                        f"no value when security_protocol is {protocol!r} (set it to "
                        "'SASL_SSL' or 'SASL_PLAINTEXT' to authenticate with SASL)",
                    )
        if not tls:
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password"):
                if getattr(self, key) is not None:
                    raise Invalid(key, f"no value when security_protocol is {protocol!r} (no TLS)")
        mechanism = self.sasl_mechanism
        if mechanism == "OAUTHBEARER":
            if not self.sasl_oauth or not isinstance(self.sasl_oauth.get("type"), str):
                raise Invalid(
                    "sasl_oauth",
                    "a token provider when sasl_mechanism is 'OAUTHBEARER', e.g. "
                    "{type: file, path: /var/run/secrets/kafka/token}",
                )
            for key in ("sasl_username", "sasl_password"):
                if getattr(self, key) is not None:
                    raise Invalid(key, "no value with OAUTHBEARER (the token identifies)")
        elif mechanism is not None:
            if self.sasl_oauth is not None:
                raise Invalid("sasl_oauth", f"no value with sasl_mechanism {mechanism!r}")
            for key in ("sasl_username", "sasl_password"):
                if getattr(self, key) is None:
                    raise Invalid(key, f"a value with sasl_mechanism {mechanism!r}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise Invalid("ssl_certfile", "the client certificate that ssl_keyfile belongs to")
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            raise Invalid("ssl_keyfile", "the encrypted key that ssl_key_password opens")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to aiokafka producers, consumers and admin clients;
        :class:`ConfigError` naming the key when a TLS file or the token provider
        cannot be used."""
        from webhook_common.kafkaauth import client_kwargs

        return client_kwargs(self)
