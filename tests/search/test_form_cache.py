"""A data-free form's rows are cached on disk: a second setup reads them instead of building."""

from __future__ import annotations

import warnings

import pytest
import torch

from evolver_opt.merge.methods.iso_cts import IsoCTS
from evolver_opt.search.config import load_config
from evolver_opt.search.form_cache import TENSOR
from evolver_opt.search.objective import build_setup
from tests.tiny_world import write_study


def _setup(tmp_path, world, **overrides):
    config = load_config(write_study(tmp_path / "s.toml", world, form='"iso_cts"', **overrides))
    return build_setup(config, precision_check=False)


def _cached_files(study_env):
    return sorted((study_env["tmp"] / "cache" / "forms").glob("*.safetensors"))


def test_a_second_setup_reads_the_form_rows_from_the_cache(study_env, tmp_path, monkeypatch):
    first = _setup(tmp_path, study_env["world"]).engine
    assert len(_cached_files(study_env)) == 1

    def never(*args, **kwargs):
        raise AssertionError("the form was built again instead of read from the cache")

    monkeypatch.setattr(IsoCTS, "task_parts", never)
    second = _setup(tmp_path, study_env["world"]).engine
    assert torch.equal(first.forms["iso_cts"], second.forms["iso_cts"])
    assert second.form_made_by["iso_cts"] == first.form_made_by["iso_cts"]


def test_other_form_options_make_another_cache_entry(study_env, tmp_path):
    _setup(tmp_path, study_env["world"])
    other = _setup(tmp_path, study_env["world"], form_options="{ common_fraction = 0.5 }")
    assert len(_cached_files(study_env)) == 2
    default = _setup(tmp_path, study_env["world"]).engine
    assert not torch.equal(other.engine.forms["iso_cts"], default.forms["iso_cts"])


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"not a safetensors file"),
        lambda path: _rewrite(path, lambda rows: rows[:, :-1]),
        lambda path: _rewrite(path, lambda rows: rows.double()),
        lambda path: _rewrite(
            path, lambda rows: rows.index_fill(1, torch.tensor([0]), float("nan"))
        ),
    ],
    ids=["not-safetensors", "shape", "dtype", "non-finite"],
)
def test_a_damaged_cache_file_is_rebuilt_with_one_warning(study_env, tmp_path, damage):
    built = _setup(tmp_path, study_env["world"]).engine.forms["iso_cts"].clone()
    (path,) = _cached_files(study_env)
    damage(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _setup(tmp_path, study_env["world"]).engine.forms["iso_cts"]
    assert [str(w.message) for w in caught if "cached form" in str(w.message)] != []
    assert torch.equal(again, built)
    from safetensors.torch import load_file

    assert torch.equal(load_file(path)[TENSOR], built[1:])  # rewritten


def _rewrite(path, change):
    from safetensors.torch import load_file, save_file

    save_file({TENSOR: change(load_file(path)[TENSOR]).contiguous()}, path)


def test_the_key_follows_the_experts_files(study_env, world, tmp_path):
    setup = _setup(tmp_path, world)
    (before,) = _cached_files(study_env)
    weights = next(world["experts"][next(iter(world["experts"]))].glob("*.safetensors"))
    weights.touch()  # a rebuilt expert (new mtime): its old form rows must not be reused
    _setup(tmp_path, world)
    assert len(_cached_files(study_env)) == 2 and before.exists()
    assert "iso_cts" in setup.engine.forms
