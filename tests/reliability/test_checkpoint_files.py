"""Fault 10: a truncated or missing expert checkpoint, and an export killed half-way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolver_opt.cli import main
from evolver_opt.errors import CheckpointError
from evolver_opt.export.folders import RECIPE_FILE
from evolver_opt.merge import load_checkpoints
from tests.reliability.conftest import ROOT, run_args
from tests.tiny_world import write_study


def _damage(model_dir: Path, kind: str) -> tuple[Path, str]:
    """Damage ``model_dir`` the way a crashed copy or a full disk does; returns the file and
    the words the error must use."""
    weights, config = model_dir / "model.safetensors", model_dir / "config.json"
    if kind == "weights-cut-in-half":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return weights, "is not a readable safetensors file (SafetensorError: Error while"
    if kind == "weights-empty":
        weights.write_bytes(b"")
        return weights, "is not a readable safetensors file (SafetensorError: Error while"
    if kind == "weights-missing":
        weights.unlink()
        return model_dir, "no weight files (*.safetensors)"
    if kind == "config-cut":
        config.write_text(config.read_text()[:40])
        return config, "config.json is not valid JSON (JSONDecodeError"
    if kind == "shard-missing":
        weights.rename(model_dir / "model-00001-of-00002.safetensors")
        index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                                "b": "model-00002-of-00002.safetensors"}}  # fmt: skip
        (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
        return model_dir / "model.safetensors.index.json", (
            "lists weight files that are missing: model-00002-of-00002.safetensors"
        )
    raise AssertionError(kind)


KINDS = ["weights-cut-in-half", "weights-empty", "weights-missing", "config-cut", "shard-missing"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_expert_checkpoint_is_a_clear_error_naming_the_file(tiny_world, tmp_path, kind):
    experts = [shutil.copytree(p, tmp_path / d) for d, p in tiny_world["experts"].items()]
    bad_file, words = _damage(experts[1], kind)
    with pytest.raises(CheckpointError) as err:
        load_checkpoints(tiny_world["base"], experts)
    message = str(err.value)
    assert f"model '{experts[1].name}'" in message and str(bad_file) in message
    assert words in message
    if kind.startswith("weights-") and kind != "weights-missing":
        assert "truncated or damaged" in message and "bytes" in message


def test_cli_run_with_a_truncated_expert_exits_1_without_traceback(study_env, tmp_path):
    world = dict(study_env["world"])
    experts = {d: shutil.copytree(p, tmp_path / d) for d, p in world["experts"].items()}
    bad_file, words = _damage(experts["vader-movies"], "weights-cut-in-half")
    study = write_study(tmp_path / "s.toml", {**world, "experts": experts}, granularity='"model"')
    result = CliRunner().invoke(main, run_args(study, study_env["storage"], "s", 4))
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert f"Error: model 'vader-movies': {bad_file} {words}" in result.output
    assert "Traceback" not in result.output


EXPORT_KILLED_MID_WAY = """
import shutil, sys, time
from pathlib import Path
from evolver_opt.export import export_merged
from evolver_opt.merge import MergeEngine
base, out, ready, *experts = sys.argv[1:]
engine = MergeEngine.from_dirs(base, experts)
real_copy = shutil.copy2
def stall(src, dst, **kw):  # the weights are written, tokenizer and recipe are not yet
    Path(ready).write_text("mid-export")
    time.sleep(600)
shutil.copy2 = stall
export_merged(engine, out, engine.uniform(), overwrite=True)
"""


@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "overwrite"])
def test_export_killed_mid_way_leaves_nothing_or_the_complete_model(tiny_world, tmp_path, existing):
    """SIGKILL while the weights of an export are on disk but its tokenizer and recipe are not:
    the target holds either nothing (new) or the previous complete export (overwrite), never a
    torn model; the same export run again completes."""
    from evolver_opt.export import export_merged
    from evolver_opt.merge import MergeEngine

    experts = [str(p) for p in tiny_world["experts"].values()]
    out, ready = tmp_path / "merged", tmp_path / "ready"
    engine = MergeEngine.from_dirs(tiny_world["base"], experts)
    if existing:
        export_merged(engine, out, engine.one_hot(0))
        previous = {p.name: p.read_bytes() for p in out.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", EXPORT_KILLED_MID_WAY, str(tiny_world["base"]), str(out),
           str(ready), *experts]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the export never reached its weights"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    temporaries = [p for p in tmp_path.iterdir() if p.name.startswith(".merged.")]
    assert temporaries and (temporaries[0] / "model.safetensors").is_file()  # it was mid-way
    if existing:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == previous
    else:
        assert not out.exists()
        with pytest.raises(CheckpointError, match=f"{out} is not a directory"):
            load_checkpoints(tiny_world["base"], [out])
    export_merged(engine, out, engine.uniform(), overwrite=True)  # run again: completes
    assert (out / RECIPE_FILE).is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / RECIPE_FILE).read_text())["coefficients"] == engine.uniform().tolist()
    load_checkpoints(tiny_world["base"], [out])  # a complete, readable model


def test_truncated_pickle_checkpoint_is_a_clear_error_even_when_opted_in(tiny_world, tmp_path):
    import torch
    from safetensors.torch import load_file

    expert = shutil.copytree(next(iter(tiny_world["experts"].values())), tmp_path / "pickled")
    weights = expert / "pytorch_model.bin"
    torch.save(load_file(expert / "model.safetensors"), weights)
    (expert / "model.safetensors").unlink()
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoints(tiny_world["base"], [expert], allow_pickle=True)
    assert f"model 'pickled': cannot read {weights} (" in str(err.value)
    assert "truncated, damaged or not a weights file" in str(err.value)
