"""Fine-tuning one expert: the base with a fresh seeded head (identical for every expert, so the
experts' heads can be merged), then AdamW steps with an optional dev curve and early stopping."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from evolver_opt.errors import CheckpointError
from evolver_opt.runtime.quiet import transformers_bars_off
from evolver_opt.zoo.recipe import ZooRecipe, resolve_base


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
