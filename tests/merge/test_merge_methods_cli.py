"""``evolver-opt merge --method M`` for every method in the registry; the methods that need
data take ``--examples N`` of each expert's own training split, or are refused with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForSequenceClassification

from evolver_opt.cli import main
from evolver_opt.cli._merge_data import data_kind, offered_methods
from evolver_opt.export.card import read_front_matter
from evolver_opt.merge import get_method, list_methods


def _merge(world, method, out, *extra):
    models = [a for p in world["experts"].values() for a in ("--model", str(p))]
    args = ["merge", "--base", str(world["base"]), *models, "--method", method,
            "--out", str(out), *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def test_the_cli_offers_the_whole_registry():
    assert offered_methods() == [m for m in list_methods() if getattr(get_method(m), "cli", True)]
    assert {"fisher", "regmean", "ties", "average"} <= set(offered_methods())


@pytest.mark.parametrize("method", offered_methods())
def test_merge_takes_every_registered_method(method, study_env, tmp_path):
    # copies of the experts: the statistics a data method caches beside them stay here
    world = dict(study_env["world"])
    world["experts"] = {
        d: Path(shutil.copytree(p, tmp_path / "experts" / d)) for d, p in world["experts"].items()
    }
    out = tmp_path / method
    extra = []
    if data_kind(get_method(method)) is not None:
        refused = _merge(world, method, out)
        assert refused.exit_code != 0 and "pass --examples N" in refused.output
        assert not out.exists()
        extra = ["--examples", "6", "--max-length", "16"]
    res = _merge(world, method, out, *extra)
    assert res.exit_code == 0, res.output
    recipe = json.loads((out / "evolver_recipe.json").read_text())
    assert recipe["method"] == method
    if extra:
        assert recipe["method_params"]["examples_per_expert"] == 6
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[2, 5, 9, 3]])).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    meta = read_front_matter((out / "README.md").read_text())
    assert method in meta["tags"] and sorted(meta.get("datasets", [])) == []  # no zoo cards


def test_data_methods_refuse_experts_without_known_training_data(families, study_env, tmp_path):
    fam = families["bert"]
    data_methods = [m for m in offered_methods() if data_kind(get_method(m))]
    assert data_methods  # fisher and regmean at least
    models = [a for p in fam.models for a in ("--model", str(p))]
    res = CliRunner().invoke(main, ["merge", "--base", str(fam.base), *models, "--method",
                                    data_methods[0], "--examples", "4", "--out",
                                    str(tmp_path / "x")])  # fmt: skip
    assert res.exit_code != 0
    assert f"model {fam.models[0]} has none evolver-opt knows" in res.output
    assert "'ft0' is not a prepared domain" in res.output


def test_parameters_beyond_the_shared_flags(study_env, tmp_path):
    world = study_env["world"]
    res = _merge(world, "average", tmp_path / "a", "--examples", "4")
    assert res.exit_code != 0 and "needs no data" in res.output
    res = _merge(world, "average", tmp_path / "b", "--param", "alpha=0.5")
    assert res.exit_code != 0 and "does not take --param alpha" in res.output
    res = _merge(world, "regmean", tmp_path / "c", "--examples", "4", "--param", "grams=1")
    assert res.exit_code != 0 and "does not take --param grams" in res.output
    res = _merge(world, "ties", tmp_path / "d", "--param", "density=0.5", "--lambda", "0.7")
    assert res.exit_code == 0, res.output
    params = json.loads((tmp_path / "d" / "evolver_recipe.json").read_text())["method_params"]
    assert params["density"] == 0.5 and params["lambda_"] == 0.7
