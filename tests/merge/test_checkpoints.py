"""Loading and compatibility: every refusal names the model, the tensor and what differs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.merge import MergeEngine, load_checkpoints

from .conftest import build_family, load_reference


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_pickle_weights_are_refused_unless_opted_in(families, tmp_path):
    fam = families["bert"]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(fam.models[1] / "config.json", pickled)
    torch.save(load_file(fam.models[1] / "model.safetensors"), pickled / "pytorch_model.bin")
    dirs = [fam.models[0], pickled, fam.models[2]]
    with pytest.raises(
        CheckpointError, match=r"'pickled'.*only pickle weights \(pytorch_model.bin\)"
    ):
        MergeEngine.from_dirs(fam.base, dirs)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_checkpoints(fam.base, dirs)
    engine = MergeEngine.from_dirs(fam.base, dirs, allow_pickle=True)
    engine.apply(engine.one_hot(1))
    ref = load_reference(fam.models[1], fam.cls)
    assert torch.equal(engine.model.classifier.weight, ref.classifier.weight)


def test_shape_mismatch_names_model_tensor_and_both_shapes(families, tmp_path):
    fam = families["bert"]
    bad = _copy(fam.models[2], tmp_path / "wide")
    state = load_file(bad / "model.safetensors")
    name = "bert.encoder.layer.1.intermediate.dense.weight"
    state[name] = torch.zeros(40, 32)
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        MergeEngine.from_dirs(fam.base, [fam.models[0], fam.models[1], bad])
    msg = str(err.value)
    assert "'wide'" in msg and name in msg and "(40, 32)" in msg and "(37, 32)" in msg


def test_missing_tensor_and_missing_weights(families, tmp_path):
    fam = families["llama"]
    bad = _copy(fam.models[0], tmp_path / "holey")
    state = load_file(bad / "model.safetensors")
    del state["model.layers.0.mlp.up_proj.weight"]
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="'holey': tensor model.layers.0.mlp.up_proj.weight"):
        MergeEngine.from_dirs(fam.base, [bad, fam.models[1]])
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(fam.models[0] / "config.json", empty)
    with pytest.raises(CheckpointError, match=r"'empty': no weight files \(\*.safetensors\)"):
        load_checkpoints(fam.base, [empty])
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_checkpoints(fam.base, [tmp_path])


def test_architecture_mismatch(families):
    with pytest.raises(CheckpointError, match="'ft0' is a 't5' model but base is 'bert'"):
        load_checkpoints(families["bert"].base, families["t5"].models)


def test_custom_code_is_refused_without_trust_remote_code(families, tmp_path):
    fam = families["bert"]
    custom = _copy(fam.models[0], tmp_path / "custom")
    cfg = json.loads((custom / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (custom / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="custom code.*trust_remote_code=True"):
        load_checkpoints(fam.base, [custom])


def test_dtype_differences_are_named(families, tmp_path):
    fam = families["bert"]
    half = _copy(fam.models[0], tmp_path / "half")
    state = {k: v.to(torch.bfloat16) for k, v in load_file(half / "model.safetensors").items()}
    save_file(state, half / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(
        UserWarning,
        match=r"model 'half': tensor bert.embeddings.word_embeddings.weight is BF16, base is F32",
    ):
        engine = MergeEngine.from_dirs(fam.base, [half, fam.models[1]])
    engine.apply(engine.one_hot(0))
    assert torch.equal(engine.model.classifier.weight, state["classifier.weight"].float())


def test_heads_auto_merges_a_shared_label_space(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, heads="auto")
    assert engine.heads_merged and engine.task_heads == {}
    with pytest.raises(ConfigError, match="heads are merged"):
        engine.use_head(0)


def test_heads_kept_separate_for_different_label_spaces(bert_mixed_heads):
    fam = bert_mixed_heads
    with pytest.raises(
        CheckpointError,
        match=r"heads='merge' is impossible: model 'ft1': head tensor classifier.weight has shape \(3, 32\) but model 'ft0' has shape \(2, 32\)",
    ):
        MergeEngine.from_dirs(fam.base, fam.models, heads="merge")
    engine = MergeEngine.from_dirs(fam.base, fam.models, heads="auto", granularity="layer")
    assert not engine.heads_merged
    assert "head" not in engine.group_names
    assert set(engine.task_heads) == {"ft0", "ft1", "ft2"}
    assert engine.task_heads["ft0"]["classifier.weight"].shape == (2, 32)
    c = np.random.default_rng(0).uniform(size=(3, engine.n_groups))
    engine.apply(c)
    body = engine.output.clone()
    for i, path in enumerate(fam.models):
        ref = load_reference(path, fam.cls)
        engine.use_head(i)
        assert torch.equal(engine.output, body)  # switching heads leaves the merged body alone
        assert torch.equal(engine.model.classifier.weight, ref.classifier.weight)
        assert engine.model.config.id2label == ref.config.id2label
        engine.apply(engine.one_hot(i))
        with torch.no_grad():
            got = engine.model(**fam.inputs).logits
            assert torch.equal(got, ref(**fam.inputs).logits)
        engine.apply(c)


def test_same_labels_different_names_are_separate(tmp_path):
    labels = [("neg", "pos"), ("negative", "positive"), ("neg", "pos")]
    fam = build_family(tmp_path, "bert", head_labels=labels)
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    assert not engine.heads_merged
    with pytest.raises(CheckpointError, match=r"'ft1' has labels \['negative', 'positive'\]"):
        MergeEngine.from_dirs(fam.base, fam.models, heads="merge")
    forced = MergeEngine.from_dirs(fam.base, [fam.models[0], fam.models[2]], heads="separate")
    assert not forced.heads_merged


def test_base_without_a_head(families, tmp_path):
    from transformers import BertModel

    fam = families["bert"]
    body = BertModel.from_pretrained(str(fam.base), add_pooling_layer=True)
    body.save_pretrained(tmp_path / "body")
    engine = MergeEngine.from_dirs(tmp_path / "body", fam.models)
    assert engine.heads_merged and engine.plan.base_head_missing
    for i, path in enumerate(fam.models):
        engine.apply(engine.one_hot(i))
        ref = load_reference(path, fam.cls)
        with torch.no_grad():
            assert torch.equal(engine.model(**fam.inputs).logits, ref(**fam.inputs).logits)
    engine.apply(engine.uniform())
    heads = [load_reference(p, fam.cls).classifier.weight for p in fam.models]
    torch.testing.assert_close(engine.model.classifier.weight, sum(heads) / 3)


def test_tied_weights_stored_twice_must_agree(families, tmp_path):
    fam = families["t5"]
    twice = _copy(fam.models[0], tmp_path / "twice")
    state = load_file(twice / "model.safetensors")
    state["lm_head.weight"] = state["shared.weight"].clone()
    save_file(state, twice / "model.safetensors", metadata={"format": "pt"})
    engine = MergeEngine.from_dirs(fam.base, [twice, fam.models[1]])  # same value: fine
    assert engine.layout.names.count("shared.weight") == 1
    state["lm_head.weight"] += 1.0
    save_file(state, twice / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match="'twice': tensors shared.weight and lm_head.weight differ"
    ):
        MergeEngine.from_dirs(fam.base, [twice, fam.models[1]])
