"""FusionBench's own TSV-M, Iso-C and Iso-CTS as oracles for ours, on a tiny random BERT.

Optional: runs where ``fusion-bench==0.2.33`` is installed (``pip install --no-deps
fusion-bench==0.2.33``: its merge functions need torch only; its package root pulls Lightning
and Hydra, so the two utility files are loaded alone, with the two helpers they import
stubbed). Skipped otherwise. Never copied: it only checks our results.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from evolver_opt.merge import MergeEngine, get_method
from evolver_opt.merge.methods._base import task_vectors

SPEC = importlib.util.find_spec("fusion_bench")
pytestmark = pytest.mark.skipif(SPEC is None, reason="fusion-bench 0.2.33 is not installed")


def _load(relative: str, name: str) -> types.ModuleType:
    """One of fusion-bench's files as a module, without running its package root."""
    root = Path(SPEC.submodule_search_locations[0])  # type: ignore[union-attr]
    stubs = {
        "fusion_bench": types.ModuleType("fusion_bench"),
        "fusion_bench.utils": types.ModuleType("fusion_bench.utils"),
        "fusion_bench.utils.type": types.ModuleType("fusion_bench.utils.type"),
    }
    stubs["fusion_bench.utils"].timeit_context = lambda *a, **k: contextlib.nullcontext()
    stubs["fusion_bench.utils.type"].StateDictType = dict
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location(name, root / relative)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


@pytest.fixture(scope="module")
def bert_engine(families):
    fam = families["bert"]
    return MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")


def _task_vector_dicts(engine: MergeEngine) -> list[dict[str, torch.Tensor]]:
    slots = list(engine.slots())
    taus = {slot.name: task_vectors(slot) for slot in slots}
    return [{name: t[i].clone() for name, t in taus.items()} for i in range(engine.n_models)]


def _ours(engine: MergeEngine, method: str, **params) -> dict[str, torch.Tensor]:
    get_method(method).merge(engine, **params)
    return {s.name: (s.out.float() - s.base.float()) for s in engine.slots()}


def _close(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        torch.testing.assert_close(value, theirs[name].float(), rtol=1e-4, atol=1e-5)


def test_tsv_m_matches_fusion_bench(bert_engine):
    tsvm = _load("method/task_singular_vector/utils/TSVM_utils.py", "fb_tsvm")
    vectors = _task_vector_dicts(bert_engine)
    theirs = tsvm.compute_and_sum_svd_mem_reduction(vectors, accelerator="cpu")
    ours = _ours(bert_engine, "tsv_m")
    n = bert_engine.n_models
    narrow = [k for k, v in vectors[0].items() if v.dim() == 2 and min(v.shape) < n]
    assert narrow == ["bert.embeddings.token_type_embeddings.weight"]
    for name in narrow:  # a matrix narrower than the task count: ours the mean, theirs zero
        assert not theirs.pop(name).any()
        mean = sum(v[name] for v in vectors) / n
        torch.testing.assert_close(ours.pop(name), mean, rtol=1e-5, atol=1e-6)
    _close(ours, theirs)


def test_iso_c_and_iso_cts_match_fusion_bench(bert_engine):
    iso = _load("method/isotropic_merging/iso_utils.py", "fb_iso")
    _close(_ours(bert_engine, "iso_c"), iso.iso_c(_task_vector_dicts(bert_engine), "cpu"))
    theirs = iso.iso_cts(_task_vector_dicts(bert_engine), 0.8, "cpu")
    _close(_ours(bert_engine, "iso_cts", common_fraction=0.8), theirs)
