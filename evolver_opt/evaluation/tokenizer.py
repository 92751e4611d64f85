"""The one tokenizer a merge search uses: found in the experts or the base, and agreed on by all.

A model folder without tokenizer files makes ``AutoTokenizer`` build an almost empty tokenizer
(every word ``[UNK]``) without a word, and a study on it runs to the end on garbage. Here a
folder counts as holding a tokenizer only if it has a vocabulary file; the first such folder
(experts first, then the base) is used, and every other folder that has one must agree with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evolver_opt.errors import CheckpointError

VOCAB_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
    "sentencepiece.bpe.model",
)  # fmt: skip


def has_tokenizer(folder: str | Path) -> bool:
    """Whether ``folder`` holds a vocabulary file (not only a tokenizer_config.json)."""
    return any((Path(folder) / name).is_file() for name in VOCAB_FILES)


def vocabulary_digest(tokenizer: Any) -> str:
    """A short hash of the token -> id map (what decides the ids a model sees)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def shared_tokenizer(folders: Sequence[tuple[str, str | Path]]) -> Any:
    """The tokenizer of the first ``(name, folder)`` holding one; all others holding one agree.

    Raises ``CheckpointError`` naming the folders when none has a tokenizer, or naming the two
    that disagree."""
    from transformers import AutoTokenizer

    holders = [(name, Path(folder)) for name, folder in folders if has_tokenizer(folder)]
    if not holders:
        listed = ", ".join(f"{name} ({folder})" for name, folder in folders)
        raise CheckpointError(
            f"no tokenizer: none of {listed} holds a vocabulary file ({', '.join(VOCAB_FILES)}). "
            "Save the tokenizer with the model (tokenizer.save_pretrained(folder))"
        )
    (first_name, first_folder), *others = holders
    tokenizer = AutoTokenizer.from_pretrained(str(first_folder))
    reference = vocabulary_digest(tokenizer)
    for name, folder in others:
        other = AutoTokenizer.from_pretrained(str(folder))
        if vocabulary_digest(other) != reference:
            raise CheckpointError(
                f"model {name!r} ({folder}) has another tokenizer than {first_name!r} "
                f"({first_folder}): vocabularies of {len(other)} and {len(tokenizer)} tokens "
                "differ, so one token id means different words to them; merge models of one "
                "base with its tokenizer"
            )
    return tokenizer
