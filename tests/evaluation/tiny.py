"""A tiny offline tokenizer and tiny random BERT classifiers (no downloads)."""

from __future__ import annotations

import random
from typing import Any

from evolver_opt.data import Split
from tests.data.tiny_data import FILLER, NEGATIVE, POSITIVE

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def tiny_tokenizer() -> Any:
    """A WordLevel tokenizer over the synthetic vocabulary, wrapped for transformers."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + sorted(set(POSITIVE + NEGATIVE + FILLER + ["w0", "w1", "w2", "w3", "w4"]))
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def tiny_bert(seed: int = 0, num_labels: int = 2, vocab_size: int = 64, head: bool = True) -> Any:
    """A random 2-layer BERT with hidden size 32."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if head else BertModel(config)
    return model.eval()


class BagOfWords:
    """A fast random classifier with the HF call signature: logits = sum of token scores."""

    def __init__(self, seed: int, vocab_size: int = 64, num_labels: int = 2) -> None:
        import torch

        self.table = torch.randn(
            vocab_size, num_labels, generator=torch.Generator().manual_seed(seed)
        )

    def eval(self) -> BagOfWords:
        return self

    def __call__(self, input_ids: Any, attention_mask: Any) -> Any:
        from types import SimpleNamespace

        scores = self.table[input_ids] * attention_mask.unsqueeze(-1)
        return SimpleNamespace(logits=scores.sum(dim=1))


def random_split(
    n: int, seed: int, name: str = "dev", domain: str = "syn", num_labels: int = 2
) -> Split:
    """``n`` random texts of 1..30 words with random labels."""
    rng = random.Random(seed)
    vocab = POSITIVE + NEGATIVE + FILLER
    texts = tuple(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 30))) for _ in range(n))
    labels = tuple(rng.randrange(num_labels) for _ in range(n))
    names = tuple(str(i) for i in range(num_labels))
    return Split(domain=domain, name=name, texts=texts, labels=labels, label_names=names)
