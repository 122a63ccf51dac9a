"""The ``none`` verifier: only with an explicit ``insecure: true``."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.verifiers.none import NO_SECRET, NoVerifier, NoVerifierConfig
from tests.gateway.verifiers._helpers import make_request, secret_list
from webhook_common.config import validate
from webhook_common.errors import ConfigError


@pytest.mark.parametrize("options", [{}, {"insecure": False}, {"insecure": "no"}])
def test_refused_without_insecure_true_naming_the_key(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        validate(NoVerifierConfig, options)
    line = str(info.value).splitlines()[1].strip()
    assert line.startswith("insecure:")
    assert "insecure: true" in line


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="no such key"):
        validate(NoVerifierConfig, {"insecure": True, "mode": "open"})


def test_warns_at_construction(caplog: pytest.LogCaptureFixture) -> None:
    config = validate(NoVerifierConfig, {"insecure": True})
    with caplog.at_level(logging.WARNING, logger="gateway.verifiers.none"):
        NoVerifier(config, secret_list("unused-secret-value"))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "without any signature check" in record.getMessage()
    assert "unused-secret-value" not in record.getMessage()


@given(
    headers=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
    body=st.binary(max_size=256),
)
def test_accepts_anything(headers: dict[str, str], body: bytes) -> None:
    verifier = NoVerifier(NoVerifierConfig(insecure=True), [])
    result = verifier.verify(make_request(headers, body))
    assert (result.secret_index, result.event_id, result.event_type) == (NO_SECRET, None, None)
