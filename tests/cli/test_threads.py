"""``--threads auto``: the default of every torch command, its count, the load warning and the
OpenMP wait policy (issue 29, item 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from evolver_opt.cli import _options, main
from evolver_opt.cli._options import auto_threads, load_warning, usable_cores

ROOT = Path(__file__).resolve().parents[2]

# every command that trains, merges or scores with torch
TORCH_COMMANDS = [
    ["run"],
    ["compare"],
    ["demo"],
    ["baselines"],
    ["export"],
    ["merge"],
    ["rerank"],
    ["evaluate"],
    ["zoo", "build"],
    ["zoo", "matrix"],
]


def _command(path: list[str]) -> click.Command:
    command: click.Command = main
    ctx = click.Context(main)
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(ctx, name)
        assert found is not None, name
        command = found
    return command


@pytest.mark.parametrize("path", TORCH_COMMANDS, ids=" ".join)
def test_every_torch_command_defaults_to_auto_threads(path):
    (threads,) = [p for p in _command(path).params if p.name == "threads"]
    assert threads.default == "auto"


def test_auto_divides_the_usable_cores_by_the_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert auto_threads(cores=8) == 8
    assert auto_threads(2, cores=8) == 4
    assert auto_threads(3, cores=8) == 2
    assert auto_threads(4, cores=2) == 1  # never zero
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        auto_threads(0, cores=2)


def test_auto_takes_omp_num_threads_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads(cores=8) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: the cores
    assert auto_threads(cores=8) == 8


def test_usable_cores_is_the_affinity_not_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert usable_cores() == 1


def test_load_warning_names_the_cost_only_above_the_cores():
    assert load_warning(2, cores=2, load=2.0) is None
    assert load_warning(2, cores=2, load=4.0) == (
        "warning: load average 4.0 on 2 cores: other processes already use them, so training "
        "and scoring with 2 threads will run about 3.0x slower than on idle cores"
    )
    assert "with 1 thread will run about 4.0x slower" in load_warning(1, cores=1, load=3.0)


def test_auto_sets_torch_threads_and_warns_under_load(monkeypatch, tmp_path):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_options, "usable_cores", lambda: 1)
    monkeypatch.setattr(_options, "load_average", lambda: 5.0)
    before = torch.get_num_threads()
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    try:
        torch.set_num_threads(2)
        result = CliRunner().invoke(main, ["rerank", "--study-name", "x", "--storage", storage])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 1  # no such study: the threads were set first
    assert "warning: load average 5.0 on 1 core: " in result.output
    assert "with 1 thread will run about 6.0x slower than on idle cores" in result.output


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_a_bad_thread_count_is_refused_naming_it(bad):
    result = CliRunner().invoke(main, ["zoo", "matrix", "nowhere.toml", "--threads", bad])
    assert result.exit_code == 2
    assert f"expected 'auto' or a number of threads >= 1, got '{bad}'" in result.output


def test_openmp_threads_sleep_instead_of_spinning():
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: the command sets PASSIVE first
    (OMP_DISPLAY_ENV makes libgomp print what it read), and keeps a policy the user chose."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(OMP_DISPLAY_ENV="true", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    code = (
        "from evolver_opt.cli._options import apply_threads; apply_threads('auto'); "
        "import torch; torch.ones(4).sum()"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in shown.stderr
    env["OMP_WAIT_POLICY"] = "active"
    kept = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in kept.stderr


def test_no_command_module_loads_torch_before_the_threads_are_set():
    """OMP_WAIT_POLICY only counts when set before torch loads libgomp: the command modules
    import torch inside their functions, after ``--threads`` is handled."""
    modules = ", ".join(f"evolver_opt.cli.{name}" for name in
                        ("run", "compare", "demo", "baselines", "export", "merge", "rerank",
                         "evaluate", "zoo", "data", "studies", "dashboard"))  # fmt: skip
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    shown = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "False"
