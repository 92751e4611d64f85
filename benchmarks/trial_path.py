"""How much code does one trial go through? (issue 16's "files a trial crosses")

Builds the tests' tiny world (a tiny BERT and three experts, no network) in a temporary folder,
runs an Evolver study on a SQLite file past its start points, then traces one more trial
(``study.ask`` -> the objective's suggests, merge and evaluation -> ``study.tell``) and prints:

- the project files in which a function ran during the trial;
- the lines of the sampler's decision (``sample_relative`` / ``sample_independent``) that ran,
  per file (the code a reader must follow to see why this trial got these coefficients);
- the project's modules over 300 lines, and the import time of ``evolver_opt`` and of
  ``evolver_opt.search.objective`` (best of 3, fresh interpreters).

Run it from the repository root of the checkout to measure (``PYTHONPATH=<checkout>``), so an
older commit can be measured with the same script:
    PYTHONPATH=. python benchmarks/trial_path.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import optuna

import evolver_opt

PACKAGE = Path(evolver_opt.__file__).parent


def _project(filename: str) -> str | None:
    path = Path(filename)
    return str(path.relative_to(PACKAGE.parent)) if path.is_relative_to(PACKAGE) else None


def _trace_trial(study: optuna.Study, objective) -> tuple[set[str], dict[str, set[int]]]:
    """Files with a call during one trial; lines run inside the sampler's decision."""
    files: set[str] = set()
    decision: dict[str, set[int]] = defaultdict(set)
    depth = 0  # > 0 while inside a sampler decision

    def tracer(frame, event, arg):
        nonlocal depth
        name = _project(frame.f_code.co_filename)
        if event == "call":
            if name is not None:
                files.add(name)
            if frame.f_code.co_name in ("sample_relative", "sample_independent") and name:
                depth += 1
            return tracer if (depth > 0 or name) else None
        if event == "line" and depth > 0 and name is not None:
            decision[name].add(frame.f_lineno)
        if (
            event == "return"
            and name
            and frame.f_code.co_name
            in (
                "sample_relative",
                "sample_independent",
            )
        ):
            depth -= 1
        return tracer

    sys.settrace(tracer)
    try:
        trial = study.ask()
        value = objective(trial)
        study.tell(trial, value)
    finally:
        sys.settrace(None)
    return files, decision


def _import_time(module: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from evolver_opt.search.config import load_config
    from evolver_opt.search.element import make_objective
    from evolver_opt.search.objective import build_setup
    from evolver_opt.search.runner import open_study, run_study
    from tests.tiny_world import build_tiny_world, write_study

    with tempfile.TemporaryDirectory() as tmp:
        world = build_tiny_world(Path(tmp) / "world")
        config = load_config(write_study(Path(tmp) / "tiny.toml", world))
        setup = build_setup(config, data_dir=world["data_dir"])
        study = open_study(setup.config, setup.initial_points(), sampler="evolver", seed=0,
                           storage=f"sqlite:///{tmp}/path.db", study_name="path")  # fmt: skip
        objective = make_objective(setup, "evolver")
        run_study(study, objective, n_trials=len(setup.initial_points()) + 3)
        files, decision = _trace_trial(study, objective)
        lineage = study.trials[-1].system_attrs.get("evolver:lineage", {})

    sources = sorted(PACKAGE.rglob("*.py"))
    big = {str(p.relative_to(PACKAGE.parent)): n for p in sources
           if (n := len(p.read_text().splitlines())) > 300}  # fmt: skip
    out = {
        "traced_trial_role": lineage.get("role"),
        "files_crossed": sorted(files),
        "decision_lines": {f: len(lines) for f, lines in sorted(decision.items())},
        "modules_over_300_lines": big,
        "import_s": {m: _import_time(m) for m in ("evolver_opt", "evolver_opt.search.objective")},
    }
    print(f"traced trial: {out['traced_trial_role']}")
    print(f"files a trial crosses: {len(files)}")
    for f in out["files_crossed"]:
        print(f"  {f}")
    total = sum(out["decision_lines"].values())
    print(f"lines run in the sampler's decision: {total} in {len(decision)} files")
    for f, n in out["decision_lines"].items():
        print(f"  {n:4d}  {f}")
    print(f"modules over 300 lines: {len(big)}")
    for f, n in sorted(big.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}  {f}")
    for m, s in out["import_s"].items():
        print(f"import {m}: {s:.2f} s (best of 3)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
