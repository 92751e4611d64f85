"""Export: a normal Hugging Face directory that reloads to identical outputs, plus a recipe."""

from __future__ import annotations

import json

import pytest
import torch

from evolver_opt import __version__
from evolver_opt.errors import CheckpointError
from evolver_opt.export import export_merged
from evolver_opt.merge import MergeEngine, get_method


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("granularity", ["model", "tensor"])
def test_round_trip_gives_identical_outputs(family, granularity, tmp_path):
    engine = MergeEngine.from_dirs(family.base, family.models, granularity=granularity)
    coef = engine.uniform() * 1.3
    out = export_merged(engine, tmp_path / "merged", coef, recipe={"study": "s1"})
    reloaded = family.cls.from_pretrained(str(out)).eval()
    assert torch.equal(_logits(reloaded, family.inputs), _logits(engine.model, family.inputs))
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not list(out.glob("*.bin"))
    recipe = json.loads((out / "evolver_recipe.json").read_text())
    assert recipe["evolver_opt_version"] == __version__
    assert recipe["models"] == {f"ft{i}": str(p) for i, p in enumerate(family.models)}
    assert recipe["method"] == "coefficients" and recipe["recipe"] == {"study": "s1"}
    assert recipe["coefficients"] == coef.tolist()
    assert recipe["group_names"] == engine.group_names
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary left behind


def test_tokenizer_copied_and_method_result_reapplied(families, tmp_path):
    from transformers import AutoTokenizer

    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    result = get_method("ties").merge(engine, density=0.5)
    merged = engine.output.clone()
    engine.apply(engine.one_hot(0))  # the engine moves on; export must redo the TIES merge
    out = export_merged(engine, tmp_path / "ties", result)
    assert torch.equal(engine.output, merged)
    recipe = json.loads((out / "evolver_recipe.json").read_text())
    assert recipe["method"] == "ties"  # the defaults used are written too
    assert recipe["method_params"] == {"density": 0.5, "lambda_": 1.0, "weights": None}
    assert AutoTokenizer.from_pretrained(str(out)).tokenize("w1 w2") == ["w1", "w2"]
    reloaded = fam.cls.from_pretrained(str(out)).eval()
    assert torch.equal(_logits(reloaded, fam.inputs), _logits(engine.model, fam.inputs))
    with pytest.raises(CheckpointError, match="exists; pass overwrite=True"):
        export_merged(engine, out, result)
    avg = get_method("average").merge(engine)
    export_merged(engine, out, avg, overwrite=True)
    assert json.loads((out / "evolver_recipe.json").read_text())["method"] == "average"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ties"]
    default = get_method("ties").merge(engine)
    assert default.params == {"density": 0.2, "lambda_": 1.0, "weights": None}


def test_export_with_separate_heads(bert_mixed_heads, tmp_path):
    fam = bert_mixed_heads
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    engine.apply(engine.uniform())
    out = export_merged(engine, tmp_path / "for_ft1", head="ft1")
    reloaded = fam.cls.from_pretrained(str(out)).eval()
    assert reloaded.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert reloaded.classifier.weight.shape == (3, 32)
    assert torch.equal(_logits(reloaded, fam.inputs), _logits(engine.model, fam.inputs))
    assert json.loads((out / "evolver_recipe.json").read_text())["head"] == "ft1"


def test_bfloat16_export(families, tmp_path):
    fam = families["llama"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, dtype=torch.bfloat16)
    out = export_merged(engine, tmp_path / "bf16", engine.uniform())
    reloaded = fam.cls.from_pretrained(str(out), dtype=torch.bfloat16).eval()
    assert reloaded.dtype == torch.bfloat16
    assert torch.equal(_logits(reloaded, fam.inputs), _logits(engine.model, fam.inputs))


def test_exported_files_are_readable_by_others_under_umask_022(families, tmp_path):
    import os
    import stat

    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    previous = os.umask(0o022)
    try:
        out = export_merged(engine, tmp_path / "merged", engine.uniform())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes
