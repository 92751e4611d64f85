"""Many workers on one PostgreSQL study: 4 `evolver-opt run` processes, and 4 threads in one."""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from evolver_opt import EvolverSampler, offspring_info, open_storage
from evolver_opt.cli import main
from tests.reliability.conftest import run_args, start_cli, trials_of

pytestmark = pytest.mark.postgres
N_TRIALS = 12  # 4 start points and 8 offspring: every worker draws offspring concurrently


def _check_valid_search(url: str, name: str) -> None:
    trials = trials_of(url, name)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers))), "trial numbers are unique and gap-free"
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [
        (t.number, t.state) for t in trials
    ]
    # The budget is met; several processes may overshoot by at most one trial each.
    assert N_TRIALS <= len(trials) <= N_TRIALS + 3
    # The 4 shared start points (3 experts + the average) ran exactly once each.
    starts = [t for t in trials if offspring_info(t) is None]
    assert len(starts) == 4 and len({tuple(sorted(t.params.items())) for t in starts}) == 4
    offspring = [offspring_info(t) for t in trials if offspring_info(t) is not None]
    indices = [o.index for o in offspring]
    assert sorted(indices) == list(range(len(indices))), "no offspring index lost or duplicated"
    # Same seed in every worker: offspring draws come from (seed, index), and no index was
    # taken twice (above), so no two workers drew the same offspring.
    # Every worker (a fresh process object on its own connection) derives the same population,
    # and each individual is the best COMPLETE trial of its slot (greedy selection).
    infos = [
        EvolverSampler(seed=0).population_info(
            optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None))
        )
        for _ in range(3)
    ]
    assert infos[0] == infos[1] == infos[2]
    for slot in infos[0]["slots"]:
        members = [starts[slot["slot"]]] + [
            t for t in trials if (o := offspring_info(t)) and o.slot == slot["slot"]
        ]
        best = max(t.value for t in members if t.state == TrialState.COMPLETE)
        assert slot["value"] == pytest.approx(best)


def test_four_cli_processes_share_one_study(tiny_study, fresh_pg, tmp_path):
    """Fault 3 and 4 as well: 4 workers, same seed, started together on an empty database."""
    name = "four-processes"
    procs = [
        start_cli(*run_args(tiny_study, fresh_pg, name, N_TRIALS), log=tmp_path / f"w{i}.log")
        for i in range(4)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    logs = "\n".join((tmp_path / f"w{i}.log").read_text() for i in range(4))
    assert codes == [0, 0, 0, 0], logs
    assert "Traceback" not in logs
    ran = sum(
        int(line.split("ran ")[1].split()[0]) for line in logs.splitlines() if " ran " in line
    )
    assert ran == len(trials_of(fresh_pg, name))  # each trial was run by exactly one worker
    _check_valid_search(fresh_pg, name)


def test_four_threads_in_one_process(tiny_study, fresh_pg):
    """``--n-jobs 4``: this test's own process runs the command (CliRunner)."""
    name = "four-threads"
    result = CliRunner().invoke(
        main, run_args(tiny_study, fresh_pg, name, N_TRIALS, "--n-jobs", "4")
    )
    assert result.exit_code == 0, result.output
    assert len(trials_of(fresh_pg, name)) == N_TRIALS  # threads of one process never overshoot
    _check_valid_search(fresh_pg, name)
