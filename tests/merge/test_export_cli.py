"""``evolver-opt export`` of a study with separate heads, and ``evolver-opt merge``: every head
in its own folder, loaded in a fresh process; the card's scores and command; mergekit YAML."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
import yaml
from click.testing import CliRunner

from evolver_opt.cli import main
from evolver_opt.export.card import read_front_matter
from evolver_opt.export.folders import BODY_FILE
from evolver_opt.export.mergekit import MERGEKIT_FILE
from tests.tiny_world import DOMAINS, invoke_run, write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

NAME = "tiny-layer-evolver-seed0"
LOAD_AND_CLASSIFY = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
out = {}
for folder in sys.argv[1:]:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["good film", "awful service"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = model(**batch).logits.argmax(-1).tolist()
    out[folder] = [model.config.id2label[i] for i in ids]
print(json.dumps(out))
"""


@pytest.fixture
def separate_study(study_env, tmp_path):
    """A 5-trial study of the tiny world with each task keeping its own head."""
    study_file = write_study(tmp_path / "s.toml", study_env["world"], heads='"separate"')
    ran = invoke_run(study_file, study_env["storage"], "--n-trials", "5")
    assert ran.exit_code == 0, ran.output
    return study_env["storage"]


def _export(storage, out, *args):
    command = ["export", "--storage", storage, "--study-name", NAME, "--out", str(out), *args]
    return CliRunner().invoke(main, command)


def test_export_writes_every_head_loadable_in_a_fresh_process(separate_study, tmp_path):
    out = tmp_path / "merged"
    res = _export(separate_study, out, "--test-scores")
    assert res.exit_code == 0, res.output
    assert "3 task folders" in res.output
    folders = [str(out / d) for d in DOMAINS]
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_CLASSIFY, *folders],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    predicted = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(set(p) <= {"negative", "positive"} and len(p) == 2 for p in predicted.values())
    assert len({(out / d / BODY_FILE).stat().st_ino for d in DOMAINS}) == 1
    card = (out / "README.md").read_text()
    meta = read_front_matter(card)
    assert {"merge", "evolver-opt"} <= set(meta["tags"])
    study = optuna.load_study(study_name=NAME, storage=separate_study)
    best = study.best_trial
    for domain in DOMAINS:  # dev from the trial, test measured by --test-scores
        dev = best.user_attrs[f"dev:{domain}/dev"]
        assert f"| {domain} | {dev:.4f} | 0." in card or f"| {domain} | {dev:.4f} | 1." in card
    assert f"trial: {best.number}" in card
    assert f"evolver-opt export --storage {separate_study} --study-name {NAME}" in card
    assert "--test-scores" in card


def test_export_one_head_and_refusals(separate_study, tmp_path):
    res = _export(separate_study, tmp_path / "one", "--head", "vader-movies")
    assert res.exit_code == 0, res.output
    assert "(one folder)" in res.output
    assert (tmp_path / "one" / "model.safetensors").is_file()
    res = _export(separate_study, tmp_path / "bad", "--head", "imdb")
    assert res.exit_code != 0 and "'imdb' is not a task of this study" in res.output
    # trial 0 is the first expert alone: a weighted average, so mergekit's linear reproduces it
    # even though the base has no head; each task folder gets its own configuration
    res = _export(separate_study, tmp_path / "mk", "--trial", "0", "--mergekit-yaml")
    assert res.exit_code == 0, res.output
    config = yaml.safe_load((tmp_path / "mk" / "vader-amazon" / MERGEKIT_FILE).read_text())
    assert config["merge_method"] == "linear"
    weight = config["models"][2]["parameters"]["weight"]  # the third expert: vader-amazon
    assert {"filter": "classifier.", "value": 1.0} in weight  # its own head, whole
    res = _export(separate_study, tmp_path / "mk2", "--trial", "3", "--mergekit-yaml")
    assert res.exit_code == 0, res.output  # trial 3: the uniform average, a weighted average too


def test_merge_card_command_and_mergekit_yaml(families, tmp_path):
    fam = families["llama"]
    models = [a for p in fam.models for a in ("--model", str(p))]
    out, path = tmp_path / "ties", tmp_path / "ties.yml"
    args = ["merge", "--base", str(fam.base), *models, "--method", "ties", "--density", "0.3",
            "--out", str(out), "--mergekit-yaml", str(path)]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    config = yaml.safe_load(path.read_text())
    assert config["merge_method"] == "ties" and config["base_model"] == str(fam.base)
    card = (out / "README.md").read_text()
    assert read_front_matter(card)["tags"][:3] == ["merge", "evolver-opt", "ties"]
    assert "--method ties --density 0.3" in card and "density: `0.3`" in card
    args = ["merge", "--base", str(fam.base), *models, "--method", "dare", "--out",
            str(tmp_path / "dare"), "--mergekit-yaml", str(tmp_path / "dare.yml")]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and "--mergekit-yaml: mergekit cannot express method 'dare'" in (
        res.output
    )
    assert not (tmp_path / "dare").exists() and not (tmp_path / "dare.yml").exists()


def test_merge_with_separate_heads_writes_every_head(bert_mixed_heads, tmp_path):
    fam = bert_mixed_heads
    models = [a for p in fam.models for a in ("--model", str(p))]
    args = ["merge", "--base", str(fam.base), *models, "--method", "average", "--out",
            str(tmp_path / "avg")]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "one folder per task (ft0, ft1, ft2)" in res.output
    assert all((tmp_path / "avg" / t / BODY_FILE).is_file() for t in ("ft0", "ft1", "ft2"))
    res = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "x"), "--mergekit-yaml", "m.yml"])
    assert res.exit_code != 0 and "heads of different shapes" in res.output
