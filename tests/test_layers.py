"""The layers go one way (docs/layout.md), checked on the source's import statements (imports
inside functions count: a lazy import is still a dependency) and in a fresh interpreter.

    application  mlproject.app: the two commands and what they orchestrate
        |   \\
      tuning -> tracking     tuning: every Optuna call; tracking: every MLflow call
        |        |
        +-> core <+          mlproject without mlproject.app: imports no mlflow, optuna or click
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PROJECT = ("mlproject", "tracking", "tuning")


def layer(module: str) -> str:
    """'app', 'tuning', 'tracking' or 'core' for a project module."""
    if module == "mlproject.app" or module.startswith("mlproject.app."):
        return "app"
    return "core" if module.split(".")[0] == "mlproject" else module.split(".")[0]


# what each layer may import, of the project's layers and of the three libraries the rule names
ALLOWED = {
    "core": {"core"},
    "tracking": {"core", "tracking", "mlflow"},
    "tuning": {"core", "tracking", "tuning", "optuna"},
    "app": {"core", "tracking", "tuning", "app", "click"},
}
RULED = ("mlflow", "optuna", "click")


def modules(src: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package's __init__) for every .py file of the project."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[0] not in PROJECT:
            continue
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def imported(name: str, path: Path, is_pkg: bool) -> set[str]:
    """Every module name an import statement anywhere in the file names (relative ones resolved)."""
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def graph(src: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module -> the project modules it imports, project module -> the ruled libraries
    it imports)."""
    mods = modules(src)
    deps, libs = {}, {}
    for name, (path, is_pkg) in mods.items():
        deps[name], libs[name] = set(), set()
        for imp in imported(name, path, is_pkg):
            top = imp.split(".")[0]
            if top in RULED:
                libs[name].add(top)
            while imp and imp not in mods:  # the longest project module the import names
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps[name].add(imp)
    return deps, libs


def violations(src: Path) -> list[str]:
    """One line per import that breaks a layer rule."""
    deps, libs = graph(src)
    out = []
    for name in sorted(deps):
        allowed = ALLOWED[layer(name)]
        out += [f"{name} ({layer(name)}) imports {d} ({layer(d)})" for d in sorted(deps[name]) if layer(d) not in allowed]
        out += [f"{name} ({layer(name)}) imports {lib}" for lib in sorted(libs[name]) if lib not in allowed]
    return out


def cycles(src: Path) -> list[list[str]]:
    """Every import cycle between project modules (strongly connected components of two or more)."""
    deps, _ = graph(src)
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in deps[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return found


def test_every_import_follows_the_layers():
    assert violations(SRC) == []


def test_no_import_cycle():
    assert cycles(SRC) == []


def test_the_core_loads_without_mlflow_optuna_or_click_in_a_fresh_interpreter():
    core = sorted(n for n in modules(SRC) if layer(n) == "core")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in core)
            + f"print(sorted(m for m in {RULED!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert "mlproject.train" in core and "mlproject.figures" in core and "mlproject.app.cli" not in core


@pytest.fixture
def src_copy(tmp_path):
    dest = tmp_path / "src"
    shutil.copytree(SRC, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


@pytest.mark.parametrize("module, added, expected", [
    ("mlproject/train.py", "import mlflow", "mlproject.train (core) imports mlflow"),
    ("mlproject/data.py", "    from tracking import runs", "mlproject.data (core) imports tracking.runs (tracking)"),
    ("tuning/objective.py", "from mlflow import MlflowClient", "tuning.objective (tuning) imports mlflow"),
    ("tracking/runs.py", "import optuna", "tracking.runs (tracking) imports optuna"),
    ("tracking/query.py", "from mlproject.app import report",
     "tracking.query (tracking) imports mlproject.app.report (app)"),
    ("mlproject/app/report.py", "import mlflow", "mlproject.app.report (app) imports mlflow"),
])
def test_an_import_against_the_layers_is_caught(src_copy, module, added, expected):
    path = src_copy / module
    if added.startswith(" "):  # an import inside a function counts too
        added = "def _added():\n" + added
    path.write_text(path.read_text(encoding="utf-8") + "\n" + added + "\n", encoding="utf-8")
    found = violations(src_copy)
    assert expected in found and all(v.startswith(expected.split(" (")[0] + " (") for v in found), found


def test_an_import_cycle_is_caught(src_copy):
    path = src_copy / "mlproject" / "models.py"  # models is imported by train; train imported here closes it
    path.write_text(path.read_text(encoding="utf-8") + "\ndef _later():\n    from mlproject import train\n",
                    encoding="utf-8")
    found = cycles(src_copy)
    assert len(found) == 1 and {"mlproject.models", "mlproject.train"} <= set(found[0])
