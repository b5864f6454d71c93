"""The tests' own layout: shared fixtures in conftest.py, shared helpers in helper modules.

A helper taken from another test module ties the two together (moving or deleting a test
breaks an unrelated one, and the fast tier imports slow modules); a fixture copied into a
module drifts from the others (issue 20: the server fixture was written four times).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Fixtures defined once, in tests/conftest.py.
SHARED_FIXTURES = {"server", "redis_server", "backend", "make_server"}


def modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(TESTS.rglob("*.py"))}


def is_test_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("test_")


def fixtures(tree: ast.Module) -> list[ast.FunctionDef]:
    def is_fixture(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return isinstance(target, ast.Attribute) and target.attr == "fixture"

    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any(map(is_fixture, node.decorator_list))
    ]


def test_no_test_module_imports_another() -> None:
    # Check that every helper a test module takes from elsewhere comes from a helper
    # module (tests/helpers.py and the like), not from another test module.
    found = []
    for path, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and is_test_module(node.module):
                found.append(f"{path.relative_to(TESTS)}:{node.lineno} from {node.module}")
            if isinstance(node, ast.Import):
                found += [
                    f"{path.relative_to(TESTS)}:{node.lineno} import {alias.name}"
                    for alias in node.names
                    if is_test_module(alias.name)
                ]
    assert found == []


def test_shared_fixtures_are_defined_in_conftest_only() -> None:
    # Check that redis_server and backend are conftest's only, and that a module's own
    # server is conftest's make_server with its settings (one return), not a copy of it.
    found = []
    for path, tree in modules().items():
        if path.name == "conftest.py":
            continue
        for fixture in fixtures(tree):
            if fixture.name not in SHARED_FIXTURES:
                continue
            body = [n for n in fixture.body if not isinstance(n, ast.Expr)]  # a docstring
            made = (
                fixture.name == "server"
                and len(body) == 1
                and isinstance(body[0], ast.Return)
                and isinstance(body[0].value, ast.Call)
                and isinstance(body[0].value.func, ast.Name)
                and body[0].value.func.id == "make_server"
            )
            if not made:
                found.append(f"{path.relative_to(TESTS)}:{fixture.lineno} {fixture.name}")
    assert found == []
