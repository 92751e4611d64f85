"""Tiny random Hugging Face models of three families, each a base plus 3 fine-tuned variants.

Built once per session and saved with ``save_pretrained`` (safetensors) into temporary
directories; a "fine-tuned" variant is the base plus seeded Gaussian noise on every tensor, so
every task vector entry is non-zero (the sparsity counts in the TIES/DARE tests are exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

FAMILIES = ("bert", "llama", "t5")
N_MODELS = 3


@dataclass(frozen=True)
class Family:
    """A base directory, its fine-tuned directories, and a batch of inputs for the models."""

    name: str
    cls: type
    base: Path
    models: tuple[Path, ...]
    inputs: dict[str, torch.Tensor]


def _config(family: str, **overrides):
    import transformers as tf

    common = {"vocab_size": 61, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    if family == "bert":
        labels = overrides.pop("labels", ("neg", "neu", "pos"))
        cfg = tf.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, num_labels=len(labels), **common,
        )  # fmt: skip
        cfg.id2label = dict(enumerate(labels))
        cfg.label2id = {v: k for k, v in enumerate(labels)}
        return tf.BertForSequenceClassification, cfg
    if family == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=37, max_position_embeddings=64, tie_word_embeddings=False, **common,
        )  # fmt: skip
        return tf.LlamaForCausalLM, cfg
    if family == "t5":
        cfg = tf.T5Config(
            d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, decoder_start_token_id=0,
            **common,
        )  # fmt: skip
        return tf.T5ForConditionalGeneration, cfg
    raise ValueError(family)


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Add seeded noise to every parameter (a stand-in for fine-tuning)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def build_family(root: Path, family: str, *, head_labels: list | None = None) -> Family:
    """Save a base and 3 variants of ``family`` under ``root``; optional per-model labels."""
    cls, cfg = _config(family)
    torch.manual_seed(0)
    base = cls(cfg).eval()
    base.save_pretrained(root / "base")
    if family == "bert":
        _write_tokenizer(root / "base")
    dirs = []
    for i in range(N_MODELS):
        if head_labels is not None:
            _, cfg_i = _config(family, labels=head_labels[i])
            model = cls(cfg_i).eval()
            own = {k: v for k, v in base.state_dict().items() if not k.startswith("classifier")}
            model.load_state_dict(own, strict=False)
        else:
            model = cls(cfg).eval()
            model.load_state_dict(base.state_dict())
        perturb(model, seed=100 + i)
        dirs.append(root / f"ft{i}")
        model.save_pretrained(dirs[-1])
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, cfg.vocab_size, (2, 9), generator=gen)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family == "t5":
        inputs["decoder_input_ids"] = ids[:, :5]
    return Family(family, cls, root / "base", tuple(dirs), inputs)


def _write_tokenizer(path: Path) -> None:
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(56)]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(str(path))


@pytest.fixture(scope="session")
def families(tmp_path_factory) -> dict[str, Family]:
    """The three families, built once."""
    return {f: build_family(tmp_path_factory.mktemp(f), f) for f in FAMILIES}


@pytest.fixture(params=FAMILIES)
def family(request, families) -> Family:
    return families[request.param]


@pytest.fixture(scope="session")
def bert_mixed_heads(tmp_path_factory) -> Family:
    """BERT variants whose label spaces differ (2, 3 and 3 labels with other names)."""
    labels = [("neg", "pos"), ("neg", "neu", "pos"), ("sports", "tech", "arts")]
    return build_family(tmp_path_factory.mktemp("bert_mixed"), "bert", head_labels=labels)


def load_reference(path: Path, cls: type) -> torch.nn.Module:
    """A checkpoint loaded the ordinary way, for comparisons."""
    return cls.from_pretrained(str(path)).eval()
