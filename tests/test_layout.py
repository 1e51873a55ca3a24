"""The layout rule of docs/design.md, read from the source with ``ast``.

* Imports flow one way: ``benchmarks -> transfer -> convert -> pretrain -> pretrain.utils``
  (the core, ``pretrain/utils``, imports no other siambench package).
* The only imports against that flow are the named lazy back-edges in ``LAZY_BACK_EDGES``
  (inside a function, never at module import).
* No import cycle, lazy imports included; ``benchmarks.report`` never imports the runner.
* No function over 60 lines, no file over 400.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pretrain", "transfer", "convert", "benchmarks")
LAYERS = ["pretrain.utils", "pretrain", "convert", "transfer", "benchmarks"]  # lower imports nothing above

# (importing module, imported module or package): why it must go against the flow.
LAZY_BACK_EDGES = {
    ("siambench.pretrain.classification", "siambench.convert.checkpoints"):
        "kNN/linear evaluation read any checkpoint format (a converted .pkl included)",
    ("siambench.convert.verify", "siambench.transfer"):
        "`siambench convert --verify` builds the detectron2 models that transfer fine-tunes",
}


def _named(module: str, target: str) -> bool:
    return any(module == m and (target == t or target.startswith(t + ".")) for m, t in LAZY_BACK_EDGES)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods["siambench." + ".".join(parts)] = path
    return mods


MODULES = _modules()


def _targets(module: str, node: ast.AST, is_pkg: bool) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module if is_pkg else module.rsplit(".", 1)[0]
        for _ in range(max(node.level - 1, 0)):
            base = base.rsplit(".", 1)[0]
        target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
        names = [target] + [f"{target}.{a.name}" for a in node.names]
    found = {n for n in names if n in MODULES}
    return {max(found, key=len)} if found else set()  # the module itself, not its parents


def _imports() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Module-level and lazy (inside a function) siambench imports of every module."""
    top: dict[str, set[str]] = {m: set() for m in MODULES}
    lazy: dict[str, set[str]] = {m: set() for m in MODULES}

    def visit(module: str, node: ast.AST, in_function: bool, is_pkg: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (lazy if in_function else top)[module] |= _targets(module, child, is_pkg)
            visit(module, child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)), is_pkg)

    for module, path in MODULES.items():
        visit(module, ast.parse(path.read_text(encoding="utf-8")), False, path.name == "__init__.py")
    return top, lazy


TOP, LAZY = _imports()


def _layer(module: str) -> int:
    short = module.removeprefix("siambench.")
    return LAYERS.index("pretrain.utils" if short.startswith("pretrain.utils") else short.split(".")[0])


def test_imports_flow_one_way():
    against = [(m, t) for m, ts in TOP.items() for t in ts if _layer(t) > _layer(m)]
    assert not against, f"module-level imports against benchmarks -> transfer -> convert -> pretrain -> core: {against}"
    lazy = {(m, t) for m, ts in LAZY.items() for t in ts if _layer(t) > _layer(m)}
    unnamed = sorted((m, t) for m, t in lazy if not _named(m, t))
    assert not unnamed, f"unnamed lazy back-edges: {unnamed}"
    assert len(LAZY_BACK_EDGES) <= 2


def test_named_back_edges_exist():
    """A named back-edge that no longer exists is a stale exception: drop it from the list."""
    for module, target in LAZY_BACK_EDGES:
        assert any(t == target or t.startswith(target + ".") for t in LAZY[module]), (module, target)


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (module -> imported modules), or []."""
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}  # a parent is not a cycle
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(v: str) -> list[str]:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (cycle := dfs(w)):
                return cycle
        state[v] = 2
        path.pop()
        return []

    for module in sorted(graph):
        if module not in state and (cycle := dfs(module)):
            return cycle
    return []


def test_no_import_cycle_even_through_lazy_imports():
    """Lazy imports are for optional heavy dependencies (detectron2, matplotlib), never to hide a cycle."""
    both = {m: TOP[m] | LAZY[m] for m in MODULES}
    assert _cycle(both) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_report_never_imports_the_runner():
    report = [m for m in MODULES if m.startswith("siambench.benchmarks.report")]
    assert not [(m, t) for m in report for t in TOP[m] | LAZY[m] if t.startswith("siambench.benchmarks.pipeline")]
    assert "siambench.benchmarks.report.report" in TOP["siambench.benchmarks.pipeline.pipeline"]


def test_the_verdict_reads_metrics_without_matplotlib():
    code = "import sys, siambench.benchmarks.report.verdict\nprint('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_layout_catches_a_back_edge():
    """The rule's own checks fire on a planted violation (so they cannot pass vacuously)."""
    assert _layer("siambench.pretrain.utils.io") < _layer("siambench.pretrain.main") < _layer("siambench.convert.cli")
    tree = ast.parse("from siambench.benchmarks import cli\n")
    assert _targets("siambench.pretrain.utils.io", tree.body[0], False) == {"siambench.benchmarks.cli"}
    assert not _named("siambench.pretrain.utils.io", "siambench.benchmarks.cli")
    assert _named("siambench.convert.verify", "siambench.transfer.roi_heads")


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_short_functions_and_files(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400, f"{path.name}: {len(text.splitlines())} lines (split it by concern)"
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"{path.name}: functions over 60 lines: {long}"
