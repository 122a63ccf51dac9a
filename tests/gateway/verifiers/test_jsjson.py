"""gateway.verifiers.jsjson against JavaScript: committed Node vectors and Node as a live oracle."""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.verifiers.jsjson import (
    NotJsonError,
    format_number,
    js_stringify,
    parse,
    stringify_request,
)
from tests import services

VECTORS_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "crystallize" / "vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text("utf-8"))["vectors"]
GOOD = [v for v in VECTORS if "challenge" in v]
BAD = [v for v in VECTORS if "error" in v]


def test_fixture_covers_the_quirks_it_claims() -> None:
    # Guards against a regenerated file that silently lost its interesting cases.
    names = {v["name"] for v in VECTORS}
    for needed in (
        "public-vector",
        "seed-order-payload",
        "lone-surrogates",
        "big-integers",
        "integer-like-keys",
        "duplicate-keys",
        "deep-nesting",
        "empty-body-get",
    ):
        assert needed in names
    assert len(BAD) >= 5


@pytest.mark.parametrize("vector", GOOD, ids=[v["name"] for v in GOOD])
def test_node_vectors_serialise_identically(vector: dict[str, Any]) -> None:
    text = stringify_request(vector["url"], vector["method"], vector["body"].encode("utf-8"))
    assert text == vector["challenge"]
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == vector["sha256"]


@pytest.mark.parametrize("vector", BAD, ids=[v["name"] for v in BAD])
def test_what_json_parse_rejects_is_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises(NotJsonError):
        js_stringify(vector["body"].encode("utf-8"))


def test_public_vector_hash() -> None:
    body = (
        b'{"item":{"get":{"id":"63f2d3b2a94533f79fc6397b","createdAt":"2023-02-20T01:58:10.000Z",'
        b'"updatedAt":"2023-02-23T07:58:34.685Z","name":"test"}}}'
    )
    url = "https://a17e-2601-645-4500-330-b07d-351d-ece7-41c1.ngrok.io/test/signature"
    text = stringify_request(url, "POST", body)
    assert (
        hashlib.sha256(text.encode()).hexdigest()
        == "1101b34dac8c55e5590a37271f1c41c3d745463854613494a1624a15be24f1f8"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (123.456, "123.456"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (2.0**53 + 2, "9007199254740994"),
        (float("inf"), "null"),
        (float("nan"), "null"),
    ],
)
def test_number_layout_follows_ecmascript(value: float, expected: str) -> None:
    assert format_number(value) == expected


def test_empty_body_is_null_and_only_empty() -> None:
    assert stringify_request("u", "GET", b"").endswith('"body":null}')
    with pytest.raises(NotJsonError):
        stringify_request("u", "GET", b" ")  # JSON.parse(" ") throws


def test_invalid_utf8_is_not_json() -> None:
    with pytest.raises(NotJsonError):
        parse(b'"\xff"')


def test_excessive_nesting_fails_closed() -> None:
    with pytest.raises(NotJsonError):
        js_stringify(b"[" * 5000 + b"]" * 5000)


# --- Node.js as a live oracle -------------------------------------------------------

_NODE_ORACLE = r"""
const rl = require("node:readline").createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const raw = JSON.parse(line);
  let answer;
  try { answer = { ok: JSON.stringify(JSON.parse(raw)) }; }
  catch (err) { answer = { error: err.name }; }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
"""


class NodeOracle:
    """One long-lived ``node`` process answering one JSON line per request."""

    def __init__(self, node: str) -> None:
        self._proc = subprocess.Popen(
            [node, "-e", _NODE_ORACLE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)

    def stringify(self, raw_text: str) -> dict[str, str]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(raw_text) + "\n")
        self._proc.stdin.flush()
        answer: dict[str, str] = json.loads(self._lines.get(timeout=15))
        return answer

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._pump_thread.join(timeout=10)  # EOF after exit ends the pump
        assert self._proc.stdout is not None
        self._proc.stdout.close()


@pytest.fixture(scope="module")
def node_oracle() -> Iterator[NodeOracle]:
    node = shutil.which("node")
    if node is None:
        services.unavailable("Node.js", "no `node` on PATH")
        raise AssertionError("unreachable")
    oracle = NodeOracle(node)
    try:
        yield oracle
    finally:
        oracle.close()


_WS = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])
_KEYS = st.sampled_from(
    ["0", "1", "2", "10", "01", "-1", "1.5", "4294967294", "4294967295", "a", "b", "__proto__"]
)


@st.composite
def _string_literal(draw: st.DrawFn, text: st.SearchStrategy[str] | None = None) -> str:
    """A JSON string literal whose characters are randomly raw or \\u-escaped, with the
    occasional lone surrogate escape (only expressible escaped)."""
    chars = draw(text if text is not None else st.text(max_size=12))
    out = ['"']
    for ch in chars:
        code = ord(ch)
        if ch in '"\\' or code < 0x20 or draw(st.integers(0, 5)) == 0:
            if code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}")
            elif ch in '\b\f\n\r\t"\\/' and draw(st.booleans()):
                out.append(json.dumps(ch)[1:-1] if ch != "/" else "\\/")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
        if draw(st.integers(0, 15)) == 0:
            out.append(f"\\u{draw(st.integers(0xD800, 0xDFFF)):04x}")
    out.append('"')
    return "".join(out)


@st.composite
def _number_literal(draw: st.DrawFn) -> str:
    """Any text the JSON number grammar allows, biased toward JavaScript's edge cases."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return repr(draw(st.floats(allow_nan=False, allow_infinity=False)))
    if kind == 1:
        return str(draw(st.integers(-(10**30), 10**30)))
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(
        st.sampled_from(["0", "1", "9", "12", "9007199254740993", "123456789012345678901"])
    )
    frac = draw(st.sampled_from(["", ".0", ".5", ".000001", ".1000000000000000055511151231257827"]))
    exp = draw(
        st.sampled_from(["", "e0", "E+2", "e-7", "e21", "e-6", "e308", "e309", "e-324", "e-400"])
    )
    return sign + whole + frac + exp


def _documents() -> st.SearchStrategy[str]:
    leaves = st.one_of(
        st.sampled_from(["null", "true", "false"]), _number_literal(), _string_literal()
    )

    def containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        def join_array(items: list[str], ws: str) -> str:
            return "[" + ws + ("," + ws).join(items) + "]"

        def join_object(pairs: list[tuple[str, str]], ws: str) -> str:
            return "{" + ws + ",".join(f"{k}{ws}:{ws}{v}" for k, v in pairs) + ws + "}"

        keys = st.one_of(_KEYS.map(json.dumps), _string_literal(st.text(max_size=4)))
        return st.one_of(
            st.builds(join_array, st.lists(children, max_size=5), _WS),
            st.builds(join_object, st.lists(st.tuples(keys, children), max_size=6), _WS),
        )

    generated = st.builds(
        lambda ws1, doc, ws2: ws1 + doc + ws2,
        _WS,
        st.recursive(leaves, containers, max_leaves=25),
        _WS,
    )
    # Also the shapes real serialisers produce (pretty-printed, ASCII-escaped or not).
    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(-(2**70), 2**70)
        | st.text(max_size=10),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
        max_leaves=20,
    )
    dumped = st.builds(
        lambda value, ascii_only, indent: json.dumps(value, ensure_ascii=ascii_only, indent=indent),
        json_values,
        st.booleans(),
        st.sampled_from([None, 0, 2]),
    )
    return st.one_of(generated, dumped)


@pytest.mark.node
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_documents())
def test_matches_node_on_random_documents(node_oracle: NodeOracle, document: str) -> None:
    expected = node_oracle.stringify(document)
    raw = document.encode("utf-8")
    if "error" in expected:
        with pytest.raises(NotJsonError):
            js_stringify(raw)
    else:
        assert js_stringify(raw) == expected["ok"]
