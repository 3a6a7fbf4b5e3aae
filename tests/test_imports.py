"""The package's import graph, read from the source with ast (imports inside functions
included): no circle, no hidden function-level import, and each module on its floor.

A module may import modules of its own floor or of a floor below, never above (FLOORS,
bottom first). The bottom floor imports nothing of minicount outside it, and threads.py
nothing of minicount at all. A function-level import is allowed for an optional dependency
(OPTIONAL); any other (a minicount module, the standard library, a required dependency)
needs a one-line reason comment on its line. Importing a module of a subpackage counts as
importing the subpackage too (its __init__ runs first), except from inside that subpackage.
"""

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minicount"

# bottom first; a module may import its own floor and the floors below
FLOORS = {
    "base": [  # imports nothing of minicount above it
        "backend", "layers", "layers.attention", "layers.embedding", "layers.layernorm",
        "layers.loss", "layers.mlp", "layers.shapes", "layers.unembed", "limits", "names",
        "checks",
        "notebook", "progress", "record", "safeio", "stats", "threads",
    ],
    "model": [  # data, the model's input checks, the model with its fast paths, checkpoints
        "inputs", "data", "optim", "fast", "fast.attention", "fast.attention_cuda", "model",
        "metrics", "checkpoint", "interop", "fast.train_step",
    ],
    "training": ["train"],
    "analysis": [
        "analysis", "analysis.ablation", "analysis.aggregation", "analysis.analyze",
        "analysis.attention_stats", "analysis.attribution", "analysis.ensemble",
        "analysis.hooks", "analysis.interventions", "analysis.linear", "analysis.logistic",
        "analysis.patterns", "analysis.scoring", "analysis.semantics",
    ],
    "study": [  # the study package: what is run, running it, and what is read from it
        "study", "study.presets", "study.spec", "study.run", "study.workers", "study.classes",
        "study.rows", "study.verdicts", "study.figures", "study.report", "study.analysis_text",
        "study.summary",
    ],
    "front": ["options", "cli", "__main__", ""],  # "" is the package itself (minicount/__init__.py)
}  # fmt: skip
FLOOR = {f"minicount.{m}".rstrip("."): i for i, ms in enumerate(FLOORS.values()) for m in ms}
OPTIONAL = {"cupy", "torch", "transformer_lens", "jax", "tqdm", "matplotlib", "scipy",
            "jupytext", "nbclient"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def comments(path: Path) -> dict[int, str]:
    """Line number -> the text of the comment on it."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}


def imports(name: str):
    """(imported names, line, in a function?) of every import statement of module name.
    Relative imports are made absolute; ``from X import y`` names X.y when that is a module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.append(([a.name for a in child.names], child, in_function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                         for a in child.names]  # fmt: skip
                found.append((names, child, in_function))
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def edges(name: str) -> set[str]:
    """The minicount modules that importing module name runs (its subpackages' __init__s
    included, except those name itself lies in)."""
    out = set()
    for names, _, _ in imports(name):
        for target in names:
            if not target.startswith("minicount"):
                continue
            out.add(target)
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if not (name == parent or name.startswith(parent + ".")):
                    out.add(parent)
    out.discard(name)
    return out


GRAPH = {name: edges(name) for name in MODULES}


def test_every_module_has_a_floor():
    assert sorted(set(MODULES) - set(FLOOR)) == [], "add new modules to FLOORS"
    assert sorted(set(FLOOR) - set(MODULES)) == [], "FLOORS names modules that are gone"


def test_no_import_circle():
    """Depth-first search for a back edge; the circle found is printed in full."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                circle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_each_module_imports_only_its_floor_and_below():
    names = list(FLOORS)
    wrong = [
        f"{m} ({names[FLOOR[m]]}) imports {t} ({names[FLOOR[t]]})"
        for m, targets in GRAPH.items()
        for t in sorted(targets)
        if FLOOR[t] > FLOOR[m]
    ]
    assert wrong == []


def test_the_bottom_floor_stands_alone():
    base = {m for m, floor in FLOOR.items() if floor == 0}
    assert {m: sorted(GRAPH[m] - base) for m in base if GRAPH[m] - base} == {}
    assert GRAPH["minicount.threads"] == set(), "threads.py imports nothing of minicount"


def test_function_level_imports_are_optional_or_give_a_reason():
    bad = []
    for name, path in MODULES.items():
        notes = comments(path)
        for targets, node, in_function in imports(name):
            if not in_function:
                continue
            if all(t.split(".")[0] in OPTIONAL for t in targets):
                continue
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            notes_here = [notes[i] for i in lines if i in notes]
            pragma = ("noqa", "type:", "fmt:")
            if not any(len(r) >= 10 and not r.startswith(pragma) for r in notes_here):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {', '.join(targets)}")
    assert bad == [], "move these imports to the top, or say on the line why they are here"


def test_the_checker_sees_what_it_claims():
    """The graph is read right: a known top-level edge, a function-level optional import, a
    subpackage's __init__ counted for a module outside it but not inside it."""
    assert "minicount.names" in GRAPH["minicount.inputs"]
    assert "minicount.analysis" in GRAPH["minicount.study.run"]  # via analysis.patterns
    assert "minicount.analysis" not in GRAPH["minicount.analysis.ensemble"]
    lazy = [t for ts, _, f in imports("minicount.backend") if f for t in ts]
    assert "cupy" in lazy
