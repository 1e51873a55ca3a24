"""benchmarks/ by concern: pipeline -> report, no import cycle (lazy imports included), light verdict."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "benchmarks"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """benchmarks module -> the benchmarks modules it imports, at any depth of its code (lazy ones too)."""
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])).removeprefix("siambench.")
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("siambench.") for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_no_import_cycle_in_benchmarks_even_through_lazy_imports() -> None:
    graph = _imports()
    assert {"benchmarks.pipeline.pipeline", "benchmarks.report.verdict", "benchmarks.cli"} <= set(graph)
    assert _cycle(graph) == []


def test_the_checker_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_report_does_not_import_the_runner_and_pipeline_uses_report() -> None:
    graph = _imports()
    report = {m for m in graph if m.startswith("benchmarks.report")}
    assert not {t for m in report for t in graph[m] if t.startswith("benchmarks.pipeline")}
    assert "benchmarks.report.report" in graph["benchmarks.pipeline.pipeline"]


def test_the_verdict_reads_metrics_without_matplotlib() -> None:
    code = "import sys, siambench.benchmarks.report.verdict\nprint('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
