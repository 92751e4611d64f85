"""Tiny synthetic corpora and prepared data directories for tests (no network)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from evolver_opt.data.parsers import RawExample
from evolver_opt.data.pipeline import DOMAINS, write_prepared

POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice", "happy", "bright"]
NEGATIVE = ["bad", "awful", "poor", "sad", "dull", "ugly", "broken", "boring"]
FILLER = ["the", "a", "movie", "phone", "day", "food", "story", "it", "was", "very", "so", "and"]


def synthetic_examples(
    n: int,
    seed: int,
    num_labels: int = 2,
    tag: str = "",
    names: Sequence[str] | None = None,
) -> list[RawExample]:
    """``n`` distinct short texts whose label is signalled by a cue word (and a ``tag``).

    Label ``k`` is named ``names[k]`` (default ``str(k)``).
    """
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        label = rng.randrange(num_labels)
        cue = (POSITIVE if label % 2 else NEGATIVE)[rng.randrange(8)]
        words = [rng.choice(FILLER) for _ in range(rng.randrange(2, 14))]
        words.insert(rng.randrange(len(words) + 1), cue)
        text = " ".join([tag, *words, f"w{label}"]).strip()
        if text not in seen:
            seen.add(text)
            out.append(RawExample(text, names[label] if names else str(label)))
    return out


def write_tiny_data(data_dir: Path, n: int = 60, seed: int = 0) -> dict:
    """A complete prepared data directory with every known domain, ``n`` examples each."""
    raw = {
        domain: synthetic_examples(
            n, seed + i, len(labels), tag=domain.split("-")[-1], names=labels
        )
        for i, (domain, (_, labels)) in enumerate(DOMAINS.items())
    }
    return write_prepared(Path(data_dir), raw)
