"""A tiny study world: prepared synthetic data, a base BERT and three experts (no network).

The fixtures ``tiny_world`` and ``study_env`` (tests/conftest.py) build it once per session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.data.tiny_data import write_tiny_data
from tests.evaluation.tiny import tiny_bert, tiny_tokenizer

if TYPE_CHECKING:
    from click.testing import Result

DOMAINS = ("vader-tweets", "vader-movies", "vader-amazon")


def _perturbed_expert(base_state: dict, seed: int):
    import torch

    model = tiny_bert(seed=0)  # same architecture and the same head initialization for all
    model.bert.load_state_dict(base_state)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def build_tiny_world(root: Path) -> dict:
    data_dir = root / "data"
    write_tiny_data(data_dir, n=60)
    tokenizer = tiny_tokenizer()
    base = tiny_bert(seed=0, head=False)
    base.save_pretrained(root / "base", safe_serialization=True)
    tokenizer.save_pretrained(root / "base")
    experts = {}
    for i, domain in enumerate(DOMAINS):
        model = _perturbed_expert(base.state_dict(), seed=10 + i)
        model.config.id2label = {0: "negative", 1: "positive"}
        model.config.label2id = {"negative": 0, "positive": 1}
        model.save_pretrained(root / domain, safe_serialization=True)
        tokenizer.save_pretrained(root / domain)
        experts[domain] = root / domain
    return {"root": root, "data_dir": data_dir, "base": root / "base", "experts": experts}


def write_study(path: Path, world: dict, **overrides) -> Path:
    """A study TOML over the tiny world; ``overrides`` replace [study] keys (TOML literals)."""
    fields = {
        "name": '"tiny"',
        "base": f'"{world["base"]}"',
        "experts": "["
        + ", ".join(f'{{name = "{d}", path = "{p}"}}' for d, p in world["experts"].items())
        + "]",
        "granularity": '"layer"',
        "dev": str(list(DOMAINS)).replace("'", '"'),
        "test_in_domain": str(list(DOMAINS)).replace("'", '"'),
        "test_out_of_domain": '["uci-imdb"]',
        "n_trials": "12",
    }
    fields.update(overrides)
    body = "\n".join(f"{k} = {v}" for k, v in fields.items())
    path.write_text(f"[study]\n{body}\n\n[study.evaluation]\nbatch_size = 16\nmax_length = 32\n")
    return path


def invoke_run(study_file: Path, storage: str, *args: str) -> Result:
    """``evolver-opt run STUDY_FILE --storage STORAGE --no-progress ARGS...`` in click's runner."""
    from click.testing import CliRunner

    from evolver_opt.cli import main

    command = ["run", str(study_file), "--storage", storage, "--no-progress", *args]
    return CliRunner().invoke(main, command)
