"""Hostile study values fail at load, or before any trial, with the field, the value and what
is allowed (issue 27, items 8 and 9)."""

from __future__ import annotations

import pytest

from evolver_opt.errors import ConfigError
from evolver_opt.search.config import load_config
from evolver_opt.search.objective import build_setup
from evolver_opt.search.samplers import check_sampler
from tests.tiny_world import invoke_run, write_study


def _with_table(tmp_path, world, table: str, body: str):
    path = write_study(tmp_path / "s.toml", world)
    text = path.read_text().replace(
        "[study.evaluation]", f"[{table}]\n{body}\n\n[study.evaluation]"
    )
    path.write_text(text)
    return path


# -- item 8: pruner options -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "patient"\noptions = {patience = inf}', "patience = inf is not a finite number"),
        ('name = "patient"\noptions = {min_delta = nan}', "min_delta = nan is not a finite number"),
        ('name = "patient"\noptions = {min_delta = -0.1}', r"expected 0.0 <= min_delta <= 1.0"),
        ('name = "median"\noptions = {n_startup_trials = 1e300}', "must be an integer"),
        ('name = "median"\noptions = {n_startup_trials = 10000000}', "out of range"),
        ('name = "median"\noptions = {n_warmup_steps = -1}', "out of range"),
        ('name = "median"\noptions = {interval_steps = 0}', "expected 1 <= interval_steps"),
        ('name = "successive_halving"\noptions = {reduction_factor = 1}', "reduction_factor"),
        ('name = "median"\noptions = {patience = 2}', "unknown option 'patience'"),
        ('name = "none"\noptions = {patience = 2}', "unknown option 'patience'"),
    ],
)
def test_pruner_options_are_finite_known_and_in_range(tiny_world, tmp_path, body, message):
    path = _with_table(tmp_path, tiny_world, "study.pruner", body)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_good_pruner_options_still_load(tiny_world, tmp_path):
    body = 'name = "patient"\noptions = {patience = 2, min_delta = 0.01, n_startup_trials = 3}'
    assert load_config(_with_table(tmp_path, tiny_world, "study.pruner", body)).pruner.make()


# -- item 9: sampler settings, sizes, nesting, positions ----------------------------------------
def test_population_size_has_an_upper_bound(tiny_world, tmp_path):
    path = _with_table(tmp_path, tiny_world, "study.evolver", "population_size = 100000000")
    with pytest.raises(ConfigError, match=r"study.evolver.population_size: .*less than or equal"):
        load_config(path)


def test_a_study_file_nested_too_deeply_is_a_clear_error(tiny_world, tmp_path):
    path = write_study(tmp_path / "s.toml", tiny_world)
    path.write_text(path.read_text() + "[other]\nx = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


@pytest.mark.parametrize("sampler", ["evolver-element", "evolver-merger:ties"])
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("F = 1.5", r"evolver.F must be in \(0, 1\]; got F = 1.5"),
        ("population_size = 8", "does not use \\[study.evolver\\] population_size = 8"),
        ('tie_break = "dev_logprob"', "tie_break = 'dev_logprob'"),
        ("restart = 0.1", "restart = 0.1"),
        ('init = "perturbed"\nbound_handling = "reflect"', "bound_handling = 'reflect', init"),
    ],
)
def test_weight_space_samplers_refuse_settings_they_ignore(
    tiny_world, tmp_path, sampler, body, message
):
    config = load_config(_with_table(tmp_path, tiny_world, "study.evolver", body))
    with pytest.raises(ConfigError, match=message):
        check_sampler(
            sampler, granularity="model", budget=10, evolver_options=config.evolver.model_dump()
        )


def test_weight_space_samplers_take_their_own_settings(tiny_world, tmp_path):
    body = "F = 1.0\nCR = 0.3\np_random = 0.2\nn_generations = 4"
    config = load_config(_with_table(tmp_path, tiny_world, "study.evolver", body))
    options = config.evolver.model_dump()
    assert check_sampler("evolver-element", granularity="model", budget=10, evolver_options=options)


def test_the_run_command_refuses_a_weight_space_f_above_one_before_any_setup(study_env, tmp_path):
    path = _with_table(tmp_path, study_env["world"], "study.evolver", "F = 1.5")
    result = invoke_run(path, study_env["storage"], "--sampler", "evolver-merger:ties")
    assert result.exit_code == 1 and "evolver.F must be in (0, 1]" in result.output, result.output
    assert "setting up" not in result.output


def test_max_length_beyond_the_models_positions_is_refused_at_setup(study_env, tmp_path):
    path = write_study(tmp_path / "s.toml", study_env["world"])
    path.write_text(path.read_text().replace("max_length = 32", "max_length = 512"))
    with pytest.raises(ConfigError, match=r"max_length = 512 exceeds the 128 token positions"):
        build_setup(load_config(path))
