"""docs/contract.md lists exactly the problem answers the webhook port's code can give
(status and ``type``), read from the code's syntax tree so that a new answer cannot be
left out of the contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The modules that answer on the webhook port: the handler and the connection guard.
WEBHOOK_PORT = ("gateway/app.py", "gateway/httplimits.py")
ROW = re.compile(r"^\| (\d{3}) \| `urn:webhook-gateway:problem:([a-z-]+)` \|", re.MULTILINE)

Answer = tuple[int, str]


def _tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), path)


def _answer(status: ast.expr, slug: ast.expr) -> Answer | None:
    """``(status, slug)`` when both are literals."""
    if not (isinstance(status, ast.Constant) and isinstance(slug, ast.Constant)):
        return None
    if isinstance(status.value, int) and isinstance(slug.value, str):
        return status.value, slug.value
    return None


def _problem_call(node: ast.AST | None) -> ast.Call | None:
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "Problem" and len(node.args) >= 2:
            return node
    return None


def _called(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _builders(tree: ast.Module) -> tuple[dict[str, Answer], dict[str, tuple[int, int]]]:
    """Functions returning a Problem: with a fixed status and type, or with a fixed
    status and the type taken from one of their parameters (name -> its index)."""
    fixed: dict[str, Answer] = {}
    by_param: dict[str, tuple[int, int]] = {}
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef):
            continue
        params = [a.arg for a in func.args.args]
        for node in ast.walk(func):
            call = _problem_call(node.value) if isinstance(node, ast.Return) else None
            if call is None:
                continue
            status, slug = call.args[0], call.args[1]
            answer = _answer(status, slug)
            if answer is not None:
                fixed[func.name] = answer
            elif (
                isinstance(status, ast.Constant)
                and isinstance(status.value, int)
                and isinstance(slug, ast.Name)
                and slug.id in params
            ):
                by_param[func.name] = (status.value, params.index(slug.id))
    return fixed, by_param


def _constants(tree: ast.Module) -> dict[str, Answer]:
    """Module-level ``NAME = Problem(status, "type", ...)``."""
    found: dict[str, Answer] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        call = _problem_call(node.value)
        answer = None if call is None else _answer(call.args[0], call.args[1])
        for target in node.targets:
            if answer is not None and isinstance(target, ast.Name):
                found[target.id] = answer
    return found


def code_answers() -> set[Answer]:
    shared = _tree("webhook_common/problem.py")
    helpers, _ = _builders(shared)
    constants = _constants(shared)
    found: set[Answer] = set()
    for path in WEBHOOK_PORT:
        tree = _tree(path)
        fixed, by_param = _builders(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in constants:
                found.add(constants[node.attr])  # problem.NAME
            if not isinstance(node, ast.Call):
                continue
            direct = _problem_call(node)
            name = _called(node)
            answer = None if direct is None else _answer(direct.args[0], direct.args[1])
            if answer is not None:
                found.add(answer)
            elif name in helpers or name in fixed:
                found.add(helpers.get(name) or fixed[name])
            elif name in by_param:
                status, index = by_param[name]
                argument = node.args[index] if len(node.args) > index else None
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    found.add((status, argument.value))
    # FastAPI's own errors on the webhook port (no route, wrong method).
    found |= {(404, "not-found"), (405, "method-not-allowed")}
    return found


def documented_answers() -> set[Answer]:
    text = (ROOT / "docs/contract.md").read_text()
    section = text.split("## HTTP answers of the webhook port", 1)[1].split("\n## ", 1)[0]
    return {(int(status), slug) for status, slug in ROW.findall(section)}


def test_the_contract_lists_every_answer_of_the_webhook_port_and_no_other() -> None:
    code, documented = code_answers(), documented_answers()
    assert code - documented == set(), "answered but not in docs/contract.md"
    assert documented - code == set(), "in docs/contract.md but never answered"


def test_the_reader_finds_answers_of_each_kind() -> None:
    code = code_answers()
    assert (400, "invalid-path") in code  # a module constant
    assert (431, "header-too-large") in code  # the connection guard
    assert (413, "body-too-large") in code  # a helper of webhook_common.problem
    assert (400, "invalid-query") in code  # a local builder given the type
    assert (500, "internal-error") in code  # a constant of webhook_common.problem
