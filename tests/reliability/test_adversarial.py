"""The holes an adversarial run found (issue 15), one regression test (or more) per item.

Items 1 (pickle in ``cma:optimizer``) and 2 (passwords in URLs) are covered in
tests/integrations/test_cma.py and tests/integrations/test_storage.py; the attribute fuzz is in
test_attribute_fuzz.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from click.testing import CliRunner
from optuna.trial import TrialState

from evolver_opt import CheckpointError, ConfigError, StateError, StorageError, open_storage
from evolver_opt.cli import main
from evolver_opt.evaluation.tokenizer import shared_tokenizer
from evolver_opt.merge import MergeEngine
from evolver_opt.runtime.worker import WorkerLoop
from evolver_opt.search import runner
from evolver_opt.search.config import load_config
from evolver_opt.search.objective import build_setup
from evolver_opt.search.runner import ATTR_HASH, open_study
from tests.reliability._synthetic_worker import objective_for, open_synthetic
from tests.tiny_world import write_study

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _copy_expert(src: Path, dst: Path, *, tokenizer: bool = True, edit=None, config=None) -> Path:
    """A copy of the model folder ``src``; ``edit(tensors)`` changes its weights in place and
    ``config(dict)`` its config.json; ``tokenizer=False`` leaves the tokenizer files out."""
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    raw = json.loads((src / "config.json").read_text())
    if config is not None:
        config(raw)
    (dst / "config.json").write_text(json.dumps(raw))
    tensors = load_file(src / "model.safetensors")
    if edit is not None:
        edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    if tokenizer:
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy(src / name, dst / name)
    return dst


def _engine(world: dict, experts: list[Path], base: Path | None = None) -> MergeEngine:
    return MergeEngine.from_dirs(base or world["base"], experts, granularity="layer")


# -- 3. run takes over a foreign study ---------------------------------------------------
def _points() -> list[dict[str, float]]:
    return [{"w": 0.5}]


def test_a_plain_optuna_study_with_the_name_is_refused_at_once(tiny_world, tmp_path):
    config = load_config(write_study(tmp_path / "s.toml", tiny_world))
    url = f"sqlite:///{tmp_path / 'foreign.db'}"
    foreign = optuna.create_study(study_name="theirs", storage=url, direction="minimize")
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with pytest.raises(ConfigError, match="'theirs' was not made by evolver-opt.*MINIMIZE"):
        open_study(config, _points(), storage=url, study_name="theirs")
    again = optuna.load_study(study_name="theirs", storage=url)
    assert again.user_attrs == {} and len(again.trials) == 2  # nothing written into it


def test_an_empty_plain_study_is_refused_after_a_short_wait(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CONFIG_WAIT_S", 0.3)
    config = load_config(write_study(tmp_path / "s.toml", tiny_world))
    url = f"sqlite:///{tmp_path / 'foreign.db'}"
    optuna.create_study(study_name="empty", storage=url, direction="maximize")
    with pytest.raises(ConfigError, match="never set up by evolver-opt"):
        open_study(config, _points(), storage=url, study_name="empty")
    assert optuna.load_study(study_name="empty", storage=url).trials == []


def test_a_study_whose_creator_died_while_initializing_is_finished(tiny_world, tmp_path):
    config = load_config(write_study(tmp_path / "s.toml", tiny_world))
    url = f"sqlite:///{tmp_path / 'ours.db'}"
    study = optuna.create_study(study_name="ours", storage=url, direction="maximize")
    study.set_user_attr(runner.ATTR_CONFIG, {"name": "tiny"})  # then the creator died
    opened = open_study(config, _points(), storage=url, study_name="ours")
    assert opened.user_attrs[ATTR_HASH] == config.identity_hash()
    assert [t.state for t in opened.trials] == [TrialState.WAITING]


def test_synthetic_demo_studies_carry_the_hash_and_refuse_foreign_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(main, ["demo", "--synthetic", "--budget", "6", "--storage", url])
    assert result.exit_code == 0, result.output
    studies = optuna.get_all_study_summaries(url)
    assert studies and all(ATTR_HASH in s.user_attrs for s in studies)
    second = CliRunner().invoke(main, ["demo", "--synthetic", "--budget", "6", "--storage", url])
    assert second.exit_code == 0, second.output  # its own studies are resumed
    other = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="demo-synthetic-g10-evolver-plus-seed0", storage=other).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1
    )
    taken = CliRunner().invoke(main, ["demo", "--synthetic", "--budget", "6", "--storage", other])
    assert taken.exit_code == 1 and "was not made by evolver-opt" in taken.output


# -- 4. the SQLite file deleted mid-study ----------------------------------------------------
def _remove_or_replace(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    else:
        shutil.copy(path, path.with_name("copy.db"))
        os.replace(path.with_name("copy.db"), path)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_removed_during_the_last_trial_is_reported(tmp_path, how):
    """The last trial: the check before the next ask (none follows) still runs and says so."""
    path = tmp_path / "s.db"
    inner = objective_for()

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 5:
            _remove_or_replace(path, how)
        return inner(trial)

    study = open_synthetic(f"sqlite:///{path}", "s", heartbeat=None)
    with pytest.raises(StorageError, match=f"{path} was {how}"):
        WorkerLoop(study, objective, n_trials=6).run()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_removed_between_trials_stops_the_next_ask(tmp_path, how):
    path = tmp_path / "s.db"

    def on_trial(trial: optuna.trial.FrozenTrial) -> None:  # after the tell of trial 4
        if trial.number == 4:
            _remove_or_replace(path, how)

    study = open_synthetic(f"sqlite:///{path}", "s", heartbeat=None)
    loop = WorkerLoop(study, objective_for(), n_trials=100, on_trial=on_trial)
    with pytest.raises(StorageError, match=f"{path} was {how}"):
        loop.run()
    assert loop.ran == 5  # not one trial more into the removed file


# -- 5. NaN in an expert's weights ------------------------------------------------------
def test_non_finite_expert_weights_are_refused_naming_the_tensor(tiny_world, tmp_path):
    def poison(tensors):
        tensors["bert.encoder.layer.1.output.dense.weight"][0, 3] = math.nan

    experts = list(tiny_world["experts"].values())
    bad = _copy_expert(experts[1], tmp_path / "nan-expert", edit=poison)
    with pytest.raises(CheckpointError, match=r"nan-expert.*bert.encoder.layer.1.output.dense"):
        _engine(tiny_world, [experts[0], bad])


# -- 6. first expert without tokenizer files ---------------------------------------------
def test_a_tokenizer_is_required_and_shared(tiny_world, tmp_path):
    experts = list(tiny_world["experts"].values())
    bare = _copy_expert(experts[0], tmp_path / "bare", tokenizer=False)
    bare_base = _copy_expert(tiny_world["base"], tmp_path / "bare-base", tokenizer=False)
    with pytest.raises(CheckpointError, match="no tokenizer: none of a .*bare.*holds a vocab"):
        shared_tokenizer([("a", bare), ("base", bare_base)])
    # the first expert has none, the base has one: the base's is used (the real vocabulary)
    tokenizer = shared_tokenizer([("a", bare), ("base", tiny_world["base"])])
    assert len(tokenizer) > 5 and tokenizer.tokenize("good")[0] != tokenizer.unk_token
    # another vocabulary in another expert is refused
    other = _copy_expert(experts[1], tmp_path / "other")
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[5:7]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="'b' .* has another tokenizer than 'a'"):
        shared_tokenizer([("a", experts[0]), ("b", other)])


def test_a_study_without_any_tokenizer_fails_at_setup(study_env, tmp_path):
    world = study_env["world"]
    experts = {
        d: _copy_expert(p, tmp_path / d, tokenizer=False) for d, p in world["experts"].items()
    }
    base = _copy_expert(world["base"], tmp_path / "base", tokenizer=False)
    listed = ", ".join(f'{{name = "{d}", path = "{p}"}}' for d, p in experts.items())
    study = write_study(tmp_path / "s.toml", world, base=f'"{base}"', experts=f"[{listed}]")
    with pytest.raises(CheckpointError, match="no tokenizer"):
        build_setup(load_config(study))


# -- 7. expert with an extra layer over a smaller base -----------------------------------
def test_an_expert_with_an_extra_layer_is_refused_listing_the_tensors(tiny_world, tmp_path):
    def add_layer(tensors):
        for key in [k for k in tensors if ".layer.1." in k]:
            tensors[key.replace(".layer.1.", ".layer.2.")] = tensors[key].clone()

    def three_layers(config):
        config["num_hidden_layers"] = 3

    experts = list(tiny_world["experts"].values())
    deeper = _copy_expert(experts[1], tmp_path / "deeper", edit=add_layer, config=three_layers)
    with pytest.raises(CheckpointError, match=r"'deeper': 16 tensor\(s\).*bert.encoder.layer.2"):
        _engine(tiny_world, [experts[0], deeper])


def _with_evaluation(path: Path, key: str, value: object) -> Path:
    """``path`` with ``[study.evaluation] key = value`` (replaced or added)."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith(f"{key} =")]
    path.write_text("\n".join([*lines, f"{key} = {value}"]) + "\n")
    return path


# -- 8. every setting that changes a score is in the resume check -----------------------
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_length", 8),
        ("bf16", "true"),
        ("device", '"cuda"'),
    ],
)
def test_evaluation_settings_that_change_scores_change_the_hash(tiny_world, tmp_path, key, value):
    base = load_config(write_study(tmp_path / "a.toml", tiny_world))
    path = _with_evaluation(write_study(tmp_path / "b.toml", tiny_world), key, value)
    assert load_config(path).identity_hash() != base.identity_hash()


@pytest.mark.parametrize(("key", "value"), [("racing", "false"), ("seed_merges", "[]")])
def test_study_settings_that_change_scores_change_the_hash(tiny_world, tmp_path, key, value):
    base = load_config(write_study(tmp_path / "a.toml", tiny_world))
    changed = load_config(write_study(tmp_path / "b.toml", tiny_world, **{key: value}))
    assert changed.identity_hash() != base.identity_hash()


def test_batch_size_and_defaults_keep_the_stored_hash(tiny_world, tmp_path):
    """Studies stored before these fields joined the identity keep their hash at defaults."""
    base = load_config(write_study(tmp_path / "a.toml", tiny_world))
    identity = base.identity()
    assert "racing" not in identity and "seed_merges" not in identity
    path = _with_evaluation(write_study(tmp_path / "b.toml", tiny_world), "batch_size", 3)
    assert load_config(path).identity_hash() == base.identity_hash()


def test_a_resume_with_another_max_length_is_refused(tiny_world, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = load_config(write_study(tmp_path / "a.toml", tiny_world))
    open_study(config, _points(), storage=url)
    path = _with_evaluation(write_study(tmp_path / "b.toml", tiny_world), "max_length", 8)
    with pytest.raises(ConfigError, match="evaluation: stored .*'max_length': 32.*now .*8"):
        open_study(load_config(path), _points(), storage=url)


# -- 9. non-finite bounds ---------------------------------------------------------------
@pytest.mark.parametrize("bounds", ["[0.0, inf]", "[-inf, 1.0]", "[0.0, nan]"])
def test_non_finite_bounds_are_refused_at_load(tiny_world, tmp_path, bounds):
    path = write_study(tmp_path / "s.toml", tiny_world, bounds=bounds)
    with pytest.raises(ConfigError, match=r"study.bounds: .*expected finite numbers"):
        load_config(path)


# -- 10. read-only, uncreatable and unreadable storage and files --------------------------
def test_a_read_only_sqlite_file_is_one_clear_error(tmp_path):
    path = tmp_path / "s.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{path}")
    with pytest.raises(StorageError, match="cannot write to storage .*readonly database"):
        open_storage(f"sqlite:///file:{path}?mode=ro&uri=true")


def test_an_uncreatable_storage_folder_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="cannot create the folder .*file/sub"):
        open_storage(f"sqlite:///{tmp_path / 'file' / 'sub' / 's.db'}")
    result = CliRunner().invoke(
        main,
        ["demo", "--synthetic", "--storage", f"sqlite:///{tmp_path / 'file' / 'sub' / 's.db'}"],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot create the folder" in result.output


def test_an_unreadable_weights_file_is_not_called_damaged(tiny_world, monkeypatch):
    from evolver_opt.merge import checkpoints

    real_open = os.open

    def denied(path, flags, *args):
        if str(path).endswith("model.safetensors"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(checkpoints.os, "open", denied)
    with pytest.raises(CheckpointError, match="Permission denied; make it readable") as info:
        _engine(tiny_world, list(tiny_world["experts"].values())[:2])
    assert "damaged" not in str(info.value)


# -- 11. tampered attributes (the fuzz test covers every key) ---------------------------
def _tamper_study_attr(url: str, table: str, key: str, text: str) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(f"UPDATE {table} SET value_json = :v WHERE key = :k"),
            {"v": text, "k": key},
        )
    engine.dispose()


def test_bad_json_in_the_population_stops_at_once_naming_it(sqlite_url):
    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    WorkerLoop(study, objective_for(), n_trials=8).run()
    _tamper_study_attr(sqlite_url, "study_system_attributes", "evolver:population", "{size: 4")
    fresh = open_synthetic(sqlite_url, "s", heartbeat=None)
    loop = WorkerLoop(fresh, objective_for(), n_trials=20)
    with pytest.raises(StateError, match="study system attribute 'evolver:population'"):
        loop.run()
    assert loop.ran <= 1
    states = [t.state for t in optuna.load_study(study_name="s", storage=sqlite_url).trials]
    assert states.count(TrialState.COMPLETE) == 8 and TrialState.FAIL not in states[:8]


@pytest.mark.parametrize(
    "value",
    [
        {"size": 10**9, "n_enqueued": 4},
        {"size": 10**9, "n_enqueued": 10**9},
        {"size": 5, "n_enqueued": 4},
    ],
)
def test_valid_json_with_wrong_population_values_is_refused(sqlite_url, value):
    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    WorkerLoop(study, objective_for(), n_trials=8).run()
    _tamper_study_attr(
        sqlite_url, "study_system_attributes", "evolver:population", json.dumps(value)
    )
    fresh = open_synthetic(sqlite_url, "s", heartbeat=None)
    with pytest.raises(StateError, match="evolver:population.*does not fit"):
        WorkerLoop(fresh, objective_for(), n_trials=12).run()


def test_a_lineage_slot_outside_the_population_is_refused(sqlite_url):
    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    WorkerLoop(study, objective_for(), n_trials=8).run()
    trial = study.trials[6]
    lineage = dict(trial.system_attrs["evolver:lineage"], slot=999)
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "UPDATE trial_system_attributes SET value_json = :v "
                "WHERE key = 'evolver:lineage' AND trial_id = :t"
            ),
            {"v": json.dumps(lineage), "t": trial._trial_id},
        )
    engine.dispose()
    fresh = open_synthetic(sqlite_url, "s", heartbeat=None)
    with pytest.raises(StateError, match="slot 999 in a population of 4"):
        WorkerLoop(fresh, objective_for(), n_trials=12).run()


def test_a_retry_that_drew_its_own_lineage_is_accepted(sqlite_url):
    """A storage error before the lineage was written: the re-queued retry (``failed_trial``
    = 6) draws a lineage of its own (``trial`` = 7); that is legitimate, not tampering."""
    inner = objective_for()
    raised = []

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 6 and not raised:
            raised.append(True)
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection lost"))
        return inner(trial)

    study = open_synthetic(sqlite_url, "s", heartbeat=1)
    WorkerLoop(study, objective, n_trials=14, storage_retry_s=5).run()
    retry = study.trials[7]
    assert retry.system_attrs["failed_trial"] == 6
    assert retry.system_attrs["evolver:lineage"]["trial"] == 7
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 14


@pytest.mark.parametrize(
    ("text", "match"),
    [("{not json", "study user attribute 'evolver_opt:config_hash'"),
     ("12345", "evolver_opt:config_hash = 12345 is malformed")],
)  # fmt: skip
def test_a_tampered_config_hash_is_one_clear_error(tiny_world, tmp_path, text, match):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = load_config(write_study(tmp_path / "a.toml", tiny_world))
    open_study(config, _points(), storage=url)
    _tamper_study_attr(url, "study_user_attributes", ATTR_HASH, text)
    with pytest.raises(StateError, match=match):
        open_study(config, _points(), storage=url)


# -- 12. CLI numbers and names are checked before any work ------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-trials", "0"], "--n-trials"),
        (["--n-trials", "-5"], "--n-trials"),
        (["--n-jobs", "0"], "--n-jobs"),
        (["--n-jobs", "-2"], "--n-jobs"),
        (["--seed", "-1"], "--seed"),
        (["--sampler", "evolverr"], "unknown sampler 'evolverr'"),
        (["--sampler", "ng:NGOptt"], "unknown Nevergrad optimizer 'NGOptt'"),
    ],
)
def test_run_refuses_bad_numbers_and_names_before_any_setup(study_env, tmp_path, args, message):
    study = write_study(tmp_path / "s.toml", study_env["world"])
    db = tmp_path / "never.db"
    result = CliRunner().invoke(main, ["run", str(study), "--storage", f"sqlite:///{db}", *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "setting up" not in result.output  # nothing was built
    assert not db.exists() or not optuna.get_all_study_summaries(f"sqlite:///{db}")


@pytest.mark.parametrize(("device", "message"), [('"gpu0"', "String should match pattern"),
                                                  ('"cuda:7"', "this machine has")])  # fmt: skip
def test_run_refuses_a_device_it_cannot_use_before_any_setup(study_env, tmp_path, device, message):
    if device == '"cuda:7"':
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has 8 CUDA devices")
    study = _with_evaluation(write_study(tmp_path / "s.toml", study_env["world"]), "device", device)
    result = CliRunner().invoke(main, ["run", str(study), "--storage", study_env["storage"]])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "setting up" not in result.output


def test_compare_refuses_a_typo_in_the_sampler_list_before_any_setup(study_env, tmp_path):
    study = write_study(tmp_path / "s.toml", study_env["world"])
    result = CliRunner().invoke(
        main,
        ["compare", str(study), "--samplers", "evolver,tpee", "--storage", study_env["storage"]],
    )
    assert result.exit_code == 1 and "unknown sampler 'tpee'" in result.output


# -- 13. NGOpt without a budget ---------------------------------------------------------
def test_nevergrad_wizard_without_budget_says_it_needs_one():
    from evolver_opt import NevergradSampler

    with pytest.raises(
        ConfigError, match=r"'NGOpt' chooses its algorithm from the budget.*budget="
    ):
        NevergradSampler("NGOpt", seed=0)
    NevergradSampler("NGOpt", seed=0, budget=20)  # with one it is fine
    NevergradSampler("TwoPointsDE", seed=0)  # and most optimizers need none


# -- 14. every trial NaN: the stop message has the stored reason ------------------------
def test_all_nan_trials_stop_with_the_recorded_reason(sqlite_url):
    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    with pytest.raises(ConfigError, match=r"5 trials failed in a row .*objective returned nan"):
        WorkerLoop(study, lambda t: math.nan, n_trials=20, max_consecutive_failures=5).run()
    assert all(t.system_attrs["fail_reason"] == "the objective returned nan" for t in study.trials)
