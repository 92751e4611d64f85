"""``run --n-jobs K``: threads of one process share one working model, so each stored value
must still be its own parameters' score (issue 27, item 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from evolver_opt.search.config import load_config, with_precision
from evolver_opt.search.element import make_objective
from evolver_opt.search.objective import build_setup, evaluate_dev
from evolver_opt.search.runner import open_setup_study, run_study
from tests.tiny_world import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def noisy_world(world: dict, root: Path, scale: float = 0.8) -> dict:
    """A copy of the tiny world whose experts are perturbed by ``scale`` (so that different
    coefficients score differently on the small dev splits)."""
    import torch
    from safetensors.torch import load_file, save_file

    experts = {}
    for i, (domain, path) in enumerate(world["experts"].items()):
        copy = Path(shutil.copytree(path, root / domain))
        weights = copy / "model.safetensors"
        state = load_file(weights)
        generator = torch.Generator().manual_seed(100 + i)
        noisy = {
            k: (v + scale * torch.randn(v.shape, generator=generator)).contiguous()
            if v.is_floating_point()
            else v
            for k, v in state.items()
        }
        save_file(noisy, weights, metadata={"format": "pt"})
        experts[domain] = copy
    return {**world, "experts": experts}


@pytest.mark.parametrize("sampler", ["random", "evolver-merger:ties"])
def test_n_jobs_4_stores_each_trials_own_score(study_env, tmp_path, sampler):
    world = noisy_world(study_env["world"], tmp_path / "noisy")
    config = load_config(
        write_study(tmp_path / "s.toml", world, granularity='"model"', racing="false")
    )
    if sampler != "random":  # a bfloat16 working model, switched to float32 by each trial
        config = with_precision(config, "bf16")
    setup = build_setup(config)
    study = open_setup_study(setup, sampler, seed=3, storage=study_env["storage"], budget=24)
    objective = make_objective(setup, sampler)
    precision = setup.engine.model_dtype
    run_study(study, objective, n_trials=24, n_jobs=4)
    assert setup.engine.model_dtype == precision, "the working model's precision is restored"
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert not failed, [t.system_attrs.get("fail_reason") for t in failed]
    if sampler != "random":
        return  # the weight-space trials' own weights are not coefficients to re-apply
    assert len({t.value for t in trials}) > 3, "the noisy world scores coefficients differently"
    wrong = []
    for t in trials:
        setup.engine.apply(setup.coefficients(t.params))
        solo = evaluate_dev(setup).score
        if solo != pytest.approx(t.value):
            wrong.append((t.number, t.value, solo))
    assert not wrong, f"stored values that are not their parameters' score: {wrong}"
