"""The service's module graph: imports point downhill (STYLE.md §8), so no module of
``service`` imports itself back through others, counting imports made inside functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import service

ROOT = Path(service.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def service_imports() -> dict[str, set[str]]:
    """Each module of ``service`` and the ``service`` modules it imports anywhere in
    its body (at the top, under TYPE_CHECKING excluded, or in a function)."""
    modules = {module_name(path): path for path in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
            for statement in block.body
            for node in ast.walk(statement)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from service import benchmark`` imports the module service.benchmark.
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
                targets.add(node.module)
        graph[name] = {t for t in targets if t in modules and t != name and t != "service"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per import cycle found by a depth-first walk (each cycle once)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        for target in sorted(graph[node]):
            if target in path:
                cycle = path[path.index(target) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append([*cycle, target])
            elif target not in done:
                walk(target, [*path, target])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            walk(start, [start])
    return found


def test_cycles_are_found() -> None:
    # Check that the walk finds a cycle where there is one, so that the test below can fail.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_service_modules_import_no_cycle() -> None:
    # Check that no module of service imports itself back, even through a function-level
    # import (benchmark <-> plotting did, through warm_up; worker tasks now live in tasks).
    graph = service_imports()
    assert "service.benchmark" in graph["service.engine"]
    assert cycles(graph) == []


def submitted_functions() -> list[tuple[str, str]]:
    """Each function handed to a worker in ``service`` (``pool.run``, ``data_pool.run``,
    ``executor.submit`` and a ``Step``'s function; through ``functools.partial`` too),
    as its module and the source naming it."""
    found = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            called = node.func
            if isinstance(called, ast.Name) and called.id == "Step" and len(node.args) > 1:
                fn = node.args[1]
            elif (
                isinstance(called, ast.Attribute)
                and isinstance(called.value, ast.Attribute | ast.Name)
                and (called.attr, ast.unparse(called.value).split(".")[-1])
                in {("run", "pool"), ("run", "data_pool"), ("submit", "executor")}
                and node.args
            ):
                fn = node.args[0]
            else:
                continue
            if isinstance(fn, ast.Call) and ast.unparse(fn.func) == "functools.partial":
                fn = fn.args[0]
            found.append((module_name(path), ast.unparse(fn)))
    return found


def test_workers_run_only_functions_of_tasks() -> None:
    # Check that every function a worker runs is one of service.tasks (where the workers'
    # preload comes from), named as tasks.<function>. The executors run the function they
    # are given, and the engine's generic step runner the Step's: checked where each is made.
    runners = {"service.compute", "service.executors", "service.daskworker"}
    submitted = [(m, fn) for m, fn in submitted_functions() if m not in runners and fn != "step.fn"]
    assert len(submitted) >= 13
    elsewhere = [(m, fn) for m, fn in submitted if not fn.startswith("tasks.")]
    assert elsewhere == []
    from service import tasks

    assert all(callable(getattr(tasks, fn.removeprefix("tasks."))) for _, fn in submitted)
    assert tasks.PRELOAD[0] == "service.workerenv"
    assert tasks.PRELOAD[-1] == "service.tasks"


def test_the_runtime_knows_no_kind() -> None:
    # Check that the generic runtime (single flight, leases, failure memory, steps)
    # imports no module of a kind of question, nor what computes one.
    kinds = {
        "service.benchmark",
        "service.sweeps",
        "service.stability",
        "service.questions",
        "service.engine",
        "service.plotting",
        "service.tasks",
        "service.schemas",
    }
    graph = service_imports()
    # A kind's package counts with its modules (service.benchmark.kernel, ...).
    of_a_kind = [
        m for m in graph["service.runtime"] if any(m.startswith(k + ".") or m == k for k in kinds)
    ]
    assert of_a_kind == []
    assert "service.runtime" in graph["service.engine"]


def test_one_lease_loop() -> None:
    # Check that one function takes a lease on a question and waits for it (benchmarks
    # and documents had one loop each), and one renews it.
    takers: dict[str, set[str]] = {"try_lease": set(), "renew_lease": set()}
    for path in ROOT.rglob("*.py"):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Attribute) and node.attr in takers:
                    takers[node.attr].add(f"{module_name(path)}.{function.name}")
    assert takers == {
        "try_lease": {"service.runtime._leased"},
        "renew_lease": {"service.runtime._renew_lease"},
    }


def test_the_create_sequence_is_written_once() -> None:
    # Check that the steps of a kind's POST (304 to If-None-Match, async job) are called
    # from one module, create, not once per route.
    steps = {"answer_not_modified", "prefers_async", "respond_async"}
    callers: dict[str, set[str]] = {step: set() for step in steps}
    for path in (ROOT / "api").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func).split(".")[-1]
                if name in steps:
                    callers[name].add(module_name(path))
    assert callers == {step: {"service.api.create"} for step in steps}


def test_no_module_outgrows_a_reading() -> None:
    # A module past 500 lines holds more than one idea (STYLE.md §8): split it by role.
    sizes = {module_name(path): len(path.read_text().splitlines()) for path in ROOT.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 500} == {}


def test_a_kinds_routes_answer_through_one_sequence() -> None:
    # A kind's POST and GET /{id} (negotiate, create or read what the caller holds, 304,
    # respond) are answers.answer_post and answers.answer_stored: no route writes them.
    steps = {"create", "not_modified"}
    callers: dict[str, set[str]] = {step: set() for step in steps}
    for path in (ROOT / "api" / "routes").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in steps:
                callers[ast.unparse(node.func).split(".")[-1]].add(module_name(path))
    assert callers == {step: set() for step in steps}


def test_every_answer_is_dumped_from_its_model() -> None:
    # A response body is its response model's JSON (model_dump_json), not a dict dumped
    # by hand: no module that answers HTTP calls orjson.dumps or JSONResponse, but
    # api/docs.py, whose answer is the OpenAPI document itself.
    answering = [*(ROOT / "api").rglob("*.py"), ROOT / "protocol.py"]
    by_hand = {
        module_name(path)
        for path in answering
        if path.name != "docs.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("orjson.dumps", "JSONResponse")
    }
    assert by_hand == set()


def test_the_readme_layout_names_every_module() -> None:
    # README "Layout" is the map of the package: each module, and each package's folder,
    # is named there, so that a module added or moved shows on the map.
    readme = (ROOT.parent / "README.md").read_text()
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", layout))
    unnamed = set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if path.name == "__init__.py":
            if relative.parent.parts and f"{relative.parent.as_posix()}/" not in named:
                unnamed.add(f"{relative.parent.as_posix()}/")
        elif path.name not in named and relative.as_posix() not in named:
            unnamed.add(relative.as_posix())
    assert unnamed == set()
