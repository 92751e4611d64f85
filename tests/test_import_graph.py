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
