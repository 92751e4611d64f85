"""The package's import graph has no circle, type-only and lazy imports included, and no module
inside the package imports the package root (benchmarks/import_cycles.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "import_cycles.py"


def test_no_import_circle_and_no_import_of_the_package_root(capsys):
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--lazy"]) == 0, capsys.readouterr().out
    assert "0 import circle(s)" in capsys.readouterr().out


# The package's top-level parts, lowest first: a module may import its own part or a part in a
# lower layer, never one beside or above it (lazy and type-only imports included).
LAYERS = (
    ("errors", "paths", "_version"),
    ("core", "data", "runtime"),
    ("integrations", "merge", "evaluation"),
    ("zoo", "export"),  # export: writing a merge out (folders, card, mergekit YAML)
    ("search",),  # what a search is and how it runs
    ("experiments",),  # runs built on searches: compare, baselines, rerank, rows
    ("reports",),  # what a person reads: the report, notes, views, statistics
    ("cli",),
)


def test_imports_point_down_the_layers():
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = SCRIPT.parent.parent / "evolver_opt"
    names = module.module_names(root)
    layer = {part: i for i, parts in enumerate(LAYERS) for part in parts}
    parts = {name.split(".")[1] for name in names if "." in name}
    assert parts <= set(layer), f"parts in no layer: {sorted(parts - set(layer))}"
    wrong = []
    for source, targets in module.edges(names, lazy=True).items():
        if "." not in source:
            continue  # the package root re-exports from every layer
        a = source.split(".")[1]
        for target in targets:
            b = target.split(".")[1] if "." in target else None
            if b is not None and a != b and layer[b] >= layer[a]:
                wrong.append(f"{source} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))
