"""The Fisher/RegMean statistics cache is checked before use (issue 27, item 2): a damaged,
tampered or foreign file is recomputed with one warning naming it; writes are atomic; a
statistics folder that cannot be created is a clear error."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from evolver_opt.errors import ConfigError
from evolver_opt.search import merge_stats
from evolver_opt.search.config import load_config
from evolver_opt.search.merge_stats import StatsCacheWarning, StoredStats, ensure_stats, spec_for
from evolver_opt.search.objective import build_setup
from tests.tiny_world import write_study


def _quiet(_message: str) -> None:
    """No progress lines in these tests."""


def _setup(world: dict, tmp_path: Path):
    return build_setup(load_config(write_study(tmp_path / "s.toml", world)))


def _rewrite(path: Path, change) -> None:
    """Apply ``change(tensors)`` to the file's tensors, keeping its stored key."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = {n: t.clone() for n, t in load_file(path).items()}
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _first(tensors: dict) -> str:
    return min(tensors)


def _truncate(path: Path, _other: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _wrong_shape(path: Path, _other: Path) -> None:
    _rewrite(path, lambda t: t.update({_first(t): torch.cat([t[_first(t)], t[_first(t)]])}))


def _wrong_dtype(path: Path, _other: Path) -> None:
    _rewrite(path, lambda t: t.update({_first(t): t[_first(t)].half()}))


def _holds_inf(path: Path, _other: Path) -> None:
    def change(t: dict) -> None:
        t[_first(t)].view(-1)[0] = float("inf")

    _rewrite(path, change)


def _negative(path: Path, _other: Path) -> None:
    def change(t: dict) -> None:
        t[_first(t)].view(-1)[0] = -1.0  # Fisher: a value; RegMean: the first diagonal entry

    _rewrite(path, change)


def _another_experts(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)


CORRUPTIONS = {
    "truncated": (_truncate, "cannot be read"),
    "wrong shape": (_wrong_shape, "has shape"),
    "wrong dtype": (_wrong_dtype, "float16"),
    "inf": (_holds_inf, "NaN or inf"),
    "negative": (_negative, "negative"),
    "another expert's file": (_another_experts, "stored key"),
}


@pytest.mark.parametrize("kind", ["fisher", "regmean"])
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_bad_cached_file_is_recomputed_with_one_warning_naming_it(
    world, tmp_path, monkeypatch, kind, corruption
):
    setup = _setup(world, tmp_path)
    spec = spec_for(setup, 8)
    paths = ensure_stats(setup, kind, spec, echo=_quiet)
    good = {n: t.clone() for n, t in load_file(paths[0]).items()}  # not mapped: cut below
    damage, reason = CORRUPTIONS[corruption]
    damage(paths[0], paths[1])
    computed = []
    compute = merge_stats.compute_stats

    def counted(kind_, engine, i, batches):
        computed.append(i)
        return compute(kind_, engine, i, batches)

    monkeypatch.setattr(merge_stats, "compute_stats", counted)
    with pytest.warns(StatsCacheWarning) as caught:
        again = ensure_stats(setup, kind, spec, echo=_quiet)
    assert again == paths and computed == [0]  # only the bad file is recomputed
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(paths[0]) in message and reason in message, message
    recomputed = load_file(paths[0])
    assert recomputed.keys() == good.keys()
    assert all(torch.equal(recomputed[n], good[n]) for n in good)
    StoredStats(setup.engine, kind, paths)[0]  # loads cleanly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_stats(setup, kind, spec, echo=_quiet)  # now good: no warning, no computing
    assert computed == [0]


def test_a_file_damaged_after_the_check_is_refused_naming_it(world, tmp_path):
    setup = _setup(world, tmp_path)
    paths = ensure_stats(setup, "fisher", spec_for(setup, 8), echo=_quiet)
    stored = StoredStats(setup.engine, "fisher", paths)
    _holds_inf(paths[1], paths[0])
    with pytest.raises(ConfigError, match=rf"{paths[1].name} is unusable: tensor .* NaN or inf"):
        stored[1]
    _truncate(paths[1], paths[0])
    with pytest.raises(ConfigError, match=rf"{paths[1].name} is unusable: it cannot be read"):
        stored[1]


def test_a_statistics_folder_that_cannot_be_created_is_a_clear_error(world, tmp_path):
    setup = _setup(world, tmp_path)
    name = setup.engine.model_names[0]
    (world["experts"][name] / "merge-stats").write_text("in the way")
    with pytest.raises(
        ConfigError, match=r"cannot create the merge statistics folder .*merge-stats"
    ):
        ensure_stats(setup, "fisher", spec_for(setup, 8), echo=_quiet)


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_temporary_one(
    world, tmp_path, monkeypatch
):
    setup = _setup(world, tmp_path)

    def torn(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(merge_stats, "save_file", torn)
    with pytest.raises(OSError, match="No space left"):
        ensure_stats(setup, "fisher", spec_for(setup, 8), echo=_quiet)
    folder = world["experts"][setup.engine.model_names[0]] / "merge-stats"
    assert list(folder.iterdir()) == []
