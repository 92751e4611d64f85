"""``evolver-opt export`` picks a trial it can export, or says clearly why not (issue 27,
item 5): weight-space studies, a study with no COMPLETE trial, a bad ``--trial``."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from evolver_opt.cli import main
from evolver_opt.search.config import load_config
from evolver_opt.search.objective import build_setup
from evolver_opt.search.runner import open_setup_study
from tests.tiny_world import invoke_run, write_study


def _export(storage: str, name: str, out, *extra: str):
    args = ["export", "--storage", storage, "--study-name", name, "--out", str(out), *extra]
    return CliRunner().invoke(main, args)


def _refused(result, *parts: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"a traceback, not a message: {result.exception!r}"
    )
    for part in parts:
        assert part in result.output, result.output


@pytest.fixture
def coefficient_study(study_env, tmp_path) -> str:
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    result = invoke_run(study_file, study_env["storage"], "--study-name", "coef", "--n-trials", "6")
    assert result.exit_code == 0, result.output
    return "coef"


@pytest.mark.parametrize("sampler", ["evolver-merger:ties", "evolver-element"])
def test_a_weight_space_study_is_refused_not_exported_as_one_trial(study_env, tmp_path, sampler):
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    name = "weights"
    ran = invoke_run(
        study_file, study_env["storage"], "--study-name", name, "--sampler", sampler,
        "--n-trials", "6",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    out = tmp_path / "merged"
    for ref in ("best", "0"):
        _refused(
            _export(study_env["storage"], name, out, "--trial", ref),
            f"ran the weight-space sampler '{sampler}'",
            "cannot be exported",
        )
    assert not out.exists()


def test_a_study_without_a_complete_trial_is_refused(study_env, tmp_path):
    config = load_config(write_study(tmp_path / "s.toml", study_env["world"]))
    open_setup_study(build_setup(config), "random", storage=study_env["storage"], study_name="e")
    _refused(
        _export(study_env["storage"], "e", tmp_path / "m"),
        "has no COMPLETE trial yet (4 WAITING)",
    )


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("\u00b2", "expected 'best' or a trial number from 0 to 5"),  # "²".isdigit() is True
        ("\u0661", "expected 'best' or a trial number from 0 to 5"),  # Arabic-Indic one
        ("6", "expected 'best' or a trial number from 0 to 5"),
        ("-1", "expected 'best' or a trial number from 0 to 5"),
        ("9" * 40, "expected 'best' or a trial number from 0 to 5"),
    ],
)
def test_a_bad_trial_reference_is_refused(coefficient_study, study_env, tmp_path, ref, message):
    _refused(
        _export(study_env["storage"], coefficient_study, tmp_path / "m", "--trial", ref), message
    )


def test_a_coefficient_study_still_exports_best_and_a_number(
    coefficient_study, study_env, tmp_path
):
    best = _export(study_env["storage"], coefficient_study, tmp_path / "best")
    assert best.exit_code == 0, best.output
    one = _export(study_env["storage"], coefficient_study, tmp_path / "one", "--trial", "1")
    assert one.exit_code == 0 and "exported trial 1" in one.output, one.output
