"""The mergekit configuration: what maps, what is refused and why, and (with mergekit installed,
``pip install -e '.[mergekit]'``) mergekit's own merge of our YAML against ours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from evolver_opt.errors import ConfigError
from evolver_opt.export.mergekit import (
    _density_for,
    _mergekit_keeps,
    _misresolved,
    _per_tensor,
    mergekit_config,
    to_yaml,
)
from evolver_opt.merge import MergeEngine, get_method, list_methods


def _resolve(setting, name):
    """mergekit's rule for a parameter: a scalar, or the first condition whose filter is a
    substring of the tensor name (a condition without filter matches everything)."""
    if not isinstance(setting, list):
        return setting
    for cond in setting:
        if cond.get("filter") is None or cond["filter"] in name:
            return cond["value"]
    return None


def test_layer_filters_tell_layer_1_from_layer_11():
    names = [f"m.layers.{i}.{p}.weight" for i in (1, 11, 2) for p in ("q", "k")]
    names += ["m.embed.weight", "head.weight"]
    values = {n: float(n.split(".")[2]) if "layers" in n else 0.5 for n in names}
    kinds = {n: n.split(".")[2] if "layers" in n else n for n in names}
    setting = _per_tensor(values, kinds=kinds, fallback=0.0)
    assert {"filter": "m.layers.1.", "value": 1.0} in setting  # the dot: not a prefix of 11
    for name, value in values.items():
        assert _resolve(setting, name) == value
    assert _resolve(setting, "some.buffer") == 0.0
    assert _per_tensor(dict.fromkeys(names, 0.25)) == 0.25  # one value: a scalar
    # tensors sharing a value across layers: a short common prefix would catch the others
    tricky = {"a.x.w": 1.0, "a.y.w": 2.0, "a.z.w": 1.0}
    setting = _per_tensor(tricky)
    assert not _misresolved([(c["filter"], c["value"]) for c in setting], tricky, None)


def test_density_mapping_keeps_the_same_counts():
    for n in (1, 2, 3, 7, 32, 37, 384, 1536, 589_824):
        for density in (0.01, 0.2, 0.3, 0.5, 0.77, 0.99):
            k = max(1, min(n, round(density * n)))
            d = density if _mergekit_keeps(n, density) == k else _density_for(n, k)
            assert _mergekit_keeps(n, d) == k, (n, density, d)


def test_ties_density_per_tensor_only_where_counts_differ(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor")
    config = mergekit_config(engine, "ties", {"density": 0.3, "lambda_": 0.8, "weights": [2] * 3})
    assert config["merge_method"] == "ties" and config["parameters"]["lambda"] == 1.6
    spec = config["models"][0]["parameters"]["density"]
    assert spec[-1] == {"value": 0.3}  # the rest keep the given density
    for name, shape in zip(engine.layout.names, engine.layout.shapes):
        n = int(np.prod(shape))
        k = max(1, round(0.3 * n))
        assert _mergekit_keeps(n, _resolve(spec, name)) == k, name
    assert "&id" not in to_yaml(config)  # no YAML anchors between the models


def test_refusals_name_the_reason(families, bert_mixed_heads, tiny_world):
    fam = families["llama"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    for name in list_methods():  # every registered method that is neither linear nor TIES
        if get_method(name).linear or name == "ties":
            continue
        with pytest.raises(ConfigError, match=f"cannot express method '{name}'"):
            mergekit_config(engine, name, {})
    with pytest.raises(ConfigError, match="random"):
        mergekit_config(engine, "dare", {})
    with pytest.raises(ConfigError, match="unequal model weights"):
        mergekit_config(engine, "ties", {"weights": [1, 2, 1]})
    mixed = MergeEngine.from_dirs(bert_mixed_heads.base, bert_mixed_heads.models)
    with pytest.raises(ConfigError, match="heads of different shapes"):
        mergekit_config(mixed, "coefficients", {}, mixed.uniform())
    # a base without the head (a BertModel): only a weighted average maps (mergekit's linear)
    world = MergeEngine.from_dirs(tiny_world["base"], list(tiny_world["experts"].values()))
    with pytest.raises(ConfigError, match="summing to one"):
        mergekit_config(world, "task_arithmetic", {}, world.uniform() * 2)
    config = mergekit_config(world, "average", {}, world.uniform())
    assert config["merge_method"] == "linear" and "base_model" not in config


def _run_mergekit(config: dict, out) -> dict[str, torch.Tensor]:
    mergekit = pytest.importorskip("mergekit", reason="mergekit not installed (optional extra)")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    assert mergekit is not None
    parsed = yaml.safe_load(to_yaml(config))  # the YAML text, as a user would pass it
    options = MergeOptions(copy_tokenizer=False, quiet=True)
    run_merge(MergeConfiguration.model_validate(parsed), str(out), options=options)
    merged: dict[str, torch.Tensor] = {}
    for f in sorted(out.glob("*.safetensors")):
        merged.update(load_file(str(f)))
    return merged


def _assert_same(engine: MergeEngine, theirs: dict[str, torch.Tensor]) -> None:
    ours = engine.model.state_dict()
    assert set(theirs) == set(ours)
    for name, tensor in theirs.items():
        torch.testing.assert_close(tensor, ours[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("family_name", ["llama", "bert"])
def test_mergekit_reproduces_layer_coefficients(families, family_name, tmp_path):
    pytest.importorskip("mergekit")
    fam = families[family_name]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")
    c = np.random.default_rng(0).uniform(-0.2, 1.0, engine.genome.shape)
    engine.apply(c)
    config = mergekit_config(engine, "coefficients", {}, engine.state["coefficients"])
    assert config["merge_method"] == "task_arithmetic"
    assert isinstance(config["models"][0]["parameters"]["weight"], list)  # per layer
    _assert_same(engine, _run_mergekit(config, tmp_path / "mk"))


def test_mergekit_reproduces_ties(families, tmp_path):
    pytest.importorskip("mergekit")
    fam = families["llama"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor")
    result = get_method("ties").merge(engine, density=0.3, lambda_=0.8, weights=[0.9] * 3)
    config = mergekit_config(engine, "ties", result.params)
    _assert_same(engine, _run_mergekit(config, tmp_path / "mk"))


def test_mergekit_reproduces_an_average_without_a_base_head(tiny_world, tmp_path):
    pytest.importorskip("mergekit")
    engine = MergeEngine.from_dirs(tiny_world["base"], list(tiny_world["experts"].values()))
    result = get_method("average").merge(engine, weights=[0.2, 0.3, 0.5])
    config = mergekit_config(engine, "average", result.params, result.coefficients)
    assert config["merge_method"] == "linear"
    _assert_same(engine, _run_mergekit(config, tmp_path / "mk"))
