"""The package's shape: imports flow one way, public paths keep working, subpackages load lazily.

The import graph is read from the source with :mod:`ast`, so it covers every import a module
can make: at module level, inside functions (deferred imports run too, just later), and the
lazy ``_LAZY`` name maps of package ``__init__`` files (PEP 562), which import their target
on first attribute access. A cycle in that graph fails the test with the modules in it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest
from conftest import ROOT, child_env

PACKAGE = "xetrack_c"
PACKAGE_DIR = ROOT / PACKAGE


def module_files() -> Dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of the package."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, known: Set[str]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (None if outside it)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a ``from`` import's module (relative imports resolved)."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    files = module_files()
    known = set(files) | {f"{PACKAGE}._core"}
    graph: Dict[str, Set[str]] = {name: set() for name in files}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        edges = graph[module]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found = _resolve(alias.name, known)
                    if found:
                        edges.add(found)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node.level, node.module)
                for alias in node.names:
                    # `from pkg import sub` imports the submodule when there is one,
                    # otherwise a name defined by pkg itself.
                    found = _resolve(f"{base}.{alias.name}", known)
                    if found != f"{base}.{alias.name}":
                        found = _resolve(base, known)
                    if found:
                        edges.add(found)
            elif isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "_LAZY" for target in node.targets
            ):
                for value in ast.literal_eval(node.value).values():
                    found = _resolve(value, known)
                    if found:
                        edges.add(found)
        edges.discard(module)
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_graph_sees_module_and_function_level_imports():
    graph = import_graph()
    # module level: the top-level package imports the Tracker
    assert f"{PACKAGE}.tracker" in graph[PACKAGE]
    # a lazy name map counts as an import of its targets
    assert f"{PACKAGE}.reader" in graph[PACKAGE]
    # an import inside a method: Tracker.to_df builds its frame with the DataFrame helpers
    assert f"{PACKAGE}._dataframe" in graph[f"{PACKAGE}.tracker"]


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    report = "\n".join(" <-> ".join(cycle) for cycle in cycles)
    assert not cycles, f"import cycles in the package:\n{report}"


def test_run_data_types_import_nothing_of_the_runner():
    # The bottom of xetrack_c.run: specs, results and options (types), what the child API
    # knows of a task (task_info) and the retry policy, an option's type (retry).
    bottom = {f"{PACKAGE}.run.{name}" for name in ("types", "task_info", "retry")}
    graph = import_graph()
    for module in sorted(bottom):
        inside = {m for m in graph[module] if m.startswith(f"{PACKAGE}.run")}
        assert inside <= bottom, (module, inside - bottom)
        assert not {m for m in graph[module] if m.startswith(f"{PACKAGE}.cli")}, module


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=child_env(), check=True)
    return out.stdout.strip()


def test_import_loads_neither_the_runner_nor_the_cli():
    code = ("import sys, xetrack_c\n"
            "print(sorted(m for m in sys.modules if m.startswith(('xetrack_c.run', 'xetrack_c.cli'))))")
    assert _python(code) == "[]"


def test_the_child_api_loads_without_the_runner():
    code = ("import sys\nfrom xetrack_c.params import get_param, log_metrics\n"
            "print(sorted(m for m in sys.modules if m.startswith('xetrack_c.run')))")
    assert _python(code) == "['xetrack_c.run', 'xetrack_c.run.child', 'xetrack_c.run.task_info']"


@pytest.mark.parametrize("statement", [
    "from xetrack_c import run_multiple, ExperimentSpec, ExperimentResult, worker_cache",
    "from xetrack_c import get_param, get_params, get_seed, log_metrics, get_experiment_id",
    "from xetrack_c.params import get_param, log_metrics, task_context, child_environment",
    "from xetrack_c.executor import run_multiple, ExperimentSpec, ExperimentResult, worker_cache",
    "from xetrack_c.run import run_multiple, ExperimentSpec, ExperimentResult, worker_cache",
    "from xetrack_c.cli import main",
    "from xetrack_c import Tracker, Reader, SeedPolicy, set_backend, cache",
])
def test_public_import_paths(statement):
    assert _python(f"{statement}\nprint('ok')") == "ok"


def test_public_paths_name_the_same_objects():
    import xetrack_c
    from xetrack_c import executor, params, run
    from xetrack_c.run import child, types

    assert xetrack_c.ExperimentSpec is executor.ExperimentSpec is run.ExperimentSpec is types.ExperimentSpec
    assert xetrack_c.run_multiple is executor.run_multiple is run.run_multiple
    assert xetrack_c.log_metrics is params.log_metrics is child.log_metrics
    assert params.STANDALONE_METRICS_DB == child.STANDALONE_METRICS_DB


def test_python_dash_m_runs_the_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", PACKAGE, "--version"], capture_output=True,
                         text=True, timeout=120, env=child_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "xetrack_c" in out.stdout or "0." in out.stdout


def test_private_modules_in_subpackages_carry_no_underscore():
    for sub in ("run", "cli"):
        names = [p.name for p in (PACKAGE_DIR / sub).glob("*.py") if p.name != "__init__.py"]
        assert names, sub
        assert not [n for n in names if n.startswith("_")], (sub, names)


if __name__ == "__main__":  # python tests/test_layout.py: print the graph and any cycles
    graph = import_graph()
    for name in sorted(graph):
        print(f"{name}: {', '.join(sorted(graph[name])) or '-'}")
    print("cycles:", find_cycles(graph) or "none")
    sys.exit(1 if find_cycles(graph) else 0)


def test_every_core_module_exists_and_holds_tests():
    """CI's other CPythons and the debug allocator run the modules named in CORE_MODULES: a
    renamed or removed module must not drop out of those jobs unseen."""
    from conftest import CORE_MODULES

    here = Path(__file__).resolve().parent
    missing = sorted(name for name in CORE_MODULES if not (here / f"{name}.py").is_file())
    assert missing == [], f"CORE_MODULES names modules that do not exist: {missing}"
    empty = sorted(name for name in CORE_MODULES
                   if "\ndef test_" not in (here / f"{name}.py").read_text())
    assert empty == [], f"CORE_MODULES names modules without tests: {empty}"
