"""The package's layers (docs/architecture.md): a module imports only from its own layer or those below, and a
command never imports another command."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "adaframe"
# Bottom to top; "base" are the top-level helpers every layer may use, "top" the package's entry points.
LAYERS = ["base", "data", "media", "models", "rl", "evaluate", "train", "recognize", "report", "commands", "top"]
BASE = {"utils", "distributed"}


def layer_of(module: str) -> str:
    """'adaframe.train.loop' -> 'train'; 'adaframe.utils' -> 'base'; 'adaframe.cli' -> 'top'."""
    parts = module.split(".")[1:]
    if len(parts) >= 2 or parts[0] in LAYERS:
        return parts[0]
    return "base" if parts[0] in BASE else "top"


def imports(path: Path) -> list[str]:
    """Every adaframe module ``path`` imports, at module level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adaframe"):
            found += [f"adaframe.{a.name}" for a in node.names] if node.module == "adaframe" else [node.module]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("adaframe.")]
    return found


def modules() -> dict[str, Path]:
    return {"adaframe." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts): p
            for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}


def test_every_folder_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(LAYERS) - {"base", "top"}
    assert len(modules()) > 30


def test_no_module_imports_from_a_layer_above_it_and_no_command_imports_another():
    upward = []
    for name, path in modules().items():
        here = layer_of(name)
        for target in imports(path):
            there = layer_of(target)
            if target in ("adaframe.Recognizer", "adaframe.Recognition"):
                continue  # the package's lazy top-level API, in docstring examples
            if LAYERS.index(there) > LAYERS.index(here) or (here == there == "commands"):
                upward.append(f"{name} ({here}) imports {target} ({there})")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from adaframe.train.loop import train\nimport adaframe.commands.demo\n")
    assert [layer_of(t) for t in imports(bad)] == ["train", "commands"]
    assert LAYERS.index("train") > LAYERS.index("models")  # so a models module importing it is flagged


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (module -> modules it imports), or [] if there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m] = 2
        path.pop()
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_no_two_modules_import_each_other_even_for_type_checking():
    mods = modules()
    graph = {name: {t for t in imports(path) if t in mods} for name, path in mods.items()}
    assert cycle(graph) == []
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check finds one
