"""Building the zoo: each expert fine-tuned once and cached as a Hugging Face directory
``zoo_dir()/<recipe name>/<domain>/`` with ``card.json``; a cached expert whose recipe hash
matches is reused, and a changed recipe (or changed data) rebuilds it. Also the float copy of a
GGUF base, the time estimate of what is left to build, and loading an expert back."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.paths import zoo_dir
from evolver_opt.runtime.clock import about
from evolver_opt.runtime.quiet import transformers_bars_off
from evolver_opt.zoo.recipe import ZooRecipe, resolve_base
from evolver_opt.zoo.train import load_base, train

CARD = "card.json"
ZOO_FORMAT = 1


def expert_hash(
    recipe: ZooRecipe, domain: str, data_sha: dict[str, str], labels: Sequence[str]
) -> str:
    """Hash of everything that determines one expert (not the list of other domains).

    ``labels`` is the domain's label list in id order: the split files store label names, so
    a reordered list leaves their sha256 as it was but changes what each head row means.
    """
    recipe = recipe.for_domain(domain)
    payload = recipe.model_dump(exclude={"domains", "eval_batch_size", "steps_per_domain"})
    payload.update(domain=domain, data=data_sha, labels=list(labels), format=ZOO_FORMAT)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_card(folder: Path) -> dict[str, Any] | None:
    """An expert's card, or None if the folder is not a complete expert."""
    path = folder / CARD
    return json.loads(path.read_text()) if path.exists() else None


def build_expert(
    recipe: ZooRecipe,
    domain: str,
    *,
    root: Path | None = None,
    data_dir: Path | None = None,
    force: bool = False,
    on_rate: Callable[[float, int], None] | None = None,
) -> tuple[Path, dict[str, Any], bool]:
    """Build (or reuse) one expert; returns its folder, its card and whether it was built.
    ``on_rate``: see :func:`evolver_opt.zoo.train.train`."""
    from evolver_opt.data import load_split, store
    from evolver_opt.data.pipeline import ensure_prepared
    from evolver_opt.data.reporting import load_test_split
    from evolver_opt.evaluation import Evaluator

    recipe = recipe.for_domain(domain)
    data_dir = ensure_prepared(data_dir)
    manifest = store.read_manifest(data_dir)
    if domain not in manifest["domains"]:
        raise ConfigError(
            f"[zoo] domains: unknown domain {domain!r}; expected one of {list(manifest['domains'])}"
        )
    info = manifest["domains"][domain]
    folder = recipe.expert_dir(domain, root)
    digest = expert_hash(recipe, domain, info["sha256"], info["labels"])
    card = read_card(folder)
    if _is_current(card, digest) and not force:
        return folder, card, False
    start = time.perf_counter()
    model, tokenizer = load_base(recipe, len(info["labels"]))
    model.config.id2label = dict(enumerate(info["labels"]))
    model.config.label2id = {label: i for i, label in enumerate(info["labels"])}
    train_split = load_split(domain, "train", data_dir=data_dir)
    dev = load_split(domain, "dev", data_dir=data_dir)
    dev_ev = Evaluator(
        model, tokenizer, [dev], batch_size=recipe.eval_batch_size, max_length=recipe.max_length
    )
    curve: list[dict[str, float]] = []
    losses = train(
        model,
        tokenizer,
        train_split,
        recipe,
        desc=f"{recipe.name}/{domain}",
        dev_score=lambda: dev_ev.dev_score([dev.key]).score,
        curve=curve,
        on_rate=on_rate,
    )
    train_s = time.perf_counter() - start
    test = load_test_split(domain, data_dir=data_dir)
    ev = Evaluator(
        model,
        tokenizer,
        [dev, test],
        batch_size=recipe.eval_batch_size,
        max_length=recipe.max_length,
    )
    card = {
        "format": ZOO_FORMAT,
        "recipe_hash": digest,
        "recipe": recipe.model_dump(mode="json"),
        "domain": domain,
        "base_dir": str(resolve_base(recipe.base)),
        "data": {"sizes": info["sizes"], "sha256": info["sha256"], "labels": info["labels"]},
        "train": {
            "seconds": round(train_s, 1),
            "steps_run": len(losses),
            "first_loss": losses[0],
            "last_loss": losses[-1],
        },
        "accuracy": {"dev": ev.evaluate(dev.key).accuracy, "test": ev.evaluate(test.key).accuracy},
    }
    if curve:  # the dev-accuracy curve, and the step whose weights were kept
        best = max(curve, key=lambda p: p["dev"]) if recipe.patience else curve[-1]
        card["curve"] = curve
        card["chosen_step"] = int(best["step"])
    card["build_seconds"] = round(time.perf_counter() - start, 1)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with transformers_bars_off():
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder, card, True


BASE_COPY = "_base"


def base_checkpoint(recipe: ZooRecipe, root: Path | None = None) -> Path:
    """The base folder the merge engine reads: the package's model folder, or for a GGUF base
    its float copy in the zoo (safetensors, with the experts' initial head), which
    :func:`build_zoo` writes."""
    if not recipe.gguf_file:
        return resolve_base(recipe.base)
    return (root or zoo_dir()) / recipe.name / BASE_COPY


def _write_base_copy(recipe: ZooRecipe, labels: list[str], root: Path | None) -> None:
    """Save the dequantized GGUF base with the experts' seeded head, once (atomic rename)."""
    folder = base_checkpoint(recipe, root)
    if (folder / "model.safetensors").exists():
        return
    model, tokenizer = load_base(recipe, len(labels))
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with transformers_bars_off():
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)


def build_zoo(
    recipe: ZooRecipe,
    *,
    root: Path | None = None,
    data_dir: Path | None = None,
    force: bool = False,
    echo: Any = print,
) -> dict[str, dict[str, Any]]:
    """Build or reuse every expert of the recipe; returns the cards by domain. ``echo`` gets
    what is to build before the first, an estimate of the time the rest will take early in the
    first expert built (at its first steps' rate) and after each expert built."""
    cards = {}
    seconds = steps = 0.0  # of the experts built in this call: the measured rate
    start = zoo_eta(recipe, recipe.domains, None, root, force, data_dir)
    if start is not None:
        echo(start)
    for k, domain in enumerate(recipe.domains):
        rest = recipe.domains[k + 1 :]

        def early(rate: float, steps_left: int, rest: Sequence[str] = rest) -> None:
            eta = zoo_eta(recipe, rest, rate, root, force, data_dir, current_steps=steps_left)
            if eta is not None:
                echo(eta)

        folder, card, built = build_expert(
            recipe, domain, root=root, data_dir=data_dir, force=force,
            on_rate=early if steps == 0 else None,
        )  # fmt: skip
        verb = f"built in {card['build_seconds']:.0f}s" if built else "reused"
        kept = f", kept step {card['chosen_step']}" if "chosen_step" in card else ""
        echo(f"{domain}: {verb} -> {folder} (dev acc {card['accuracy']['dev']:.3f}{kept})")
        cards[domain] = card
        if built:
            seconds += card["build_seconds"]
            steps += card["train"]["steps_run"]
            eta = zoo_eta(recipe, recipe.domains[k + 1 :], seconds / steps, root, force, data_dir)
            if eta is not None:
                echo(eta)
    if recipe.gguf_file:  # the merge engine reads safetensors: a float copy of the base
        _write_base_copy(recipe, cards[recipe.domains[0]]["data"]["labels"], root)
    return cards


def _is_current(card: dict[str, Any] | None, digest: str) -> bool:
    return card is not None and card.get("recipe_hash") == digest


def needs_build(
    recipe: ZooRecipe, domain: str, root: Path | None = None, data_dir: Path | None = None
) -> bool:
    """Whether ``domain``'s expert is missing or was built from another recipe or data."""
    from evolver_opt.data import store
    from evolver_opt.data.pipeline import ensure_prepared

    info = store.read_manifest(ensure_prepared(data_dir))["domains"].get(domain)
    if info is None:
        return True
    digest = expert_hash(recipe.for_domain(domain), domain, info["sha256"], info["labels"])
    return not _is_current(read_card(recipe.expert_dir(domain, root)), digest)


def zoo_eta(
    recipe: ZooRecipe,
    remaining: Sequence[str],
    seconds_per_step: float | None,
    root: Path | None = None,
    force: bool = False,
    data_dir: Path | None = None,
    *,
    current_steps: int = 0,
) -> str | None:
    """How long the experts of ``remaining`` still to build, and ``current_steps`` left of the
    one in training, will take at the rate measured so far (an upper bound: early stopping may
    end one sooner); None if nothing is left. ``seconds_per_step=None``: no rate yet, the
    steps alone."""
    todo = [d for d in remaining if force or needs_build(recipe, d, root, data_dir)]
    if not todo and not current_steps:
        return None
    total = current_steps + sum(recipe.for_domain(d).steps for d in todo)
    experts = len(todo) + (1 if current_steps else 0)
    what = f"zoo: {experts} expert(s) to build, at most {total} steps"
    if seconds_per_step is None:
        return f"{what}; the time they take follows the first steps"
    return (
        f"{what}: {about(total * seconds_per_step)} left at {seconds_per_step:.2f} s/step "
        "(a busy machine is slower; see README)"
    )


def load_expert(folder: Path, *, device: str = "cpu") -> tuple[Any, Any]:
    """An expert (or any safetensors classifier directory) and its tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    if not any(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder}: no .safetensors weights (pickle checkpoints are refused)")
    with transformers_bars_off():
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    model = model.to(device)
    return model.eval(), AutoTokenizer.from_pretrained(folder)
