"""The import structure's nevers (docs/architecture.md), read from the source with ``ast``, so a feature that adds a
hallway fails here instead of in the next review: no import circle between modules; the planner imports no runner;
``config`` imports nothing of the submission; ``reporting`` and ``charts`` nothing of the search; no runner module
imports another; only ``mlperf_assets/store.py`` connects to DuckDB; the run folder's file names are spelled in
``harness/run_folder.py`` only. Every import counts, those inside functions and under ``TYPE_CHECKING`` too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("mlperf_assets", "resources", "jobs")
RUNNERS = ("local", "ssh", "docker", "kubernetes")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for package in PACKAGES:
        for path in sorted((PROJECT / package).rglob("*.py")):
            out[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return out


SOURCES = _sources()


def _imports(module: str) -> set[str]:
    """The project modules ``module`` imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    path, tree = SOURCES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in SOURCES:  # a name imported from a module: the module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(m) for m in SOURCES}


def _package_face(module: str) -> bool:
    return SOURCES[module][0].name == "__init__.py"


def test_the_sources_are_read():
    assert {"mlperf_assets.plan", "mlperf_assets.config.models", "resources.runners.ssh", "jobs.sensors"} <= set(GRAPH)
    assert "mlperf_assets.harness.args" in GRAPH["mlperf_assets.plan"]
    assert "resources.runners.base" in GRAPH["resources.runners.ssh"]  # relative imports resolve


def test_no_import_circle():
    """Between modules (a package's ``__init__`` that hands names on is left out: importing ``a.b`` passes through
    ``a/__init__.py`` without it being a dependency of ``a.b``)."""
    graph = {m: {d for d in deps if not _package_face(d)} for m, deps in GRAPH.items() if not _package_face(m)}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                circles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == []


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("mlperf_assets.plan", "resources."),
    ("mlperf_assets.config", "mlperf_assets.submission"),
    ("mlperf_assets.reporting", "mlperf_assets.search"),
    ("mlperf_assets.charts", "mlperf_assets.search"),
    ("mlperf_assets.search.algorithm", "resources."),
    ("mlperf_assets.harness", "mlperf_assets.config"),
])
def test_nevers(importer: str, forbidden: str):
    offenders = {m: sorted(d for d in deps if d == forbidden or d.startswith(forbidden.rstrip(".") + "."))
                 for m, deps in GRAPH.items() if m == importer or m.startswith(importer + ".")}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_no_runner_module_imports_another():
    runners = {f"resources.runners.{r}" for r in RUNNERS}
    assert {m: sorted(GRAPH[m] & (runners - {m})) for m in runners} == {m: [] for m in runners}


def _calls(module: str, owner: str, attr: str) -> int:
    return sum(1 for n in ast.walk(SOURCES[module][1]) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Attribute) and n.func.attr == attr
               and isinstance(n.func.value, ast.Name) and n.func.value.id == owner)


def test_only_the_store_connects_to_duckdb():
    assert {m for m in SOURCES if _calls(m, "duckdb", "connect")} == {"mlperf_assets.store"}


@pytest.mark.parametrize("name", ["run_manifest.json", "progress.jsonl", "samples.jsonl", "telemetry.jsonl",
                                  "run_spec.json", "exit_code", "runner.log"])
def test_run_folder_names_are_spelled_in_the_run_folder_module_only(name: str):
    spelled = {m for m, (_, tree) in SOURCES.items()
               if any(isinstance(n, ast.Constant) and n.value == name for n in ast.walk(tree))}
    assert spelled == {"mlperf_assets.harness.run_folder"}
