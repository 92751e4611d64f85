"""The zoo's expert matrix: every expert (rows) scored on every task's split (columns).

Reporting code: it may read test splits, and it never chooses anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from safetensors.torch import load_file

from evolver_opt.data import Split
from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.evaluation.evaluator import Evaluator
from evolver_opt.evaluation.report import report_splits
from evolver_opt.merge.compat import head_parameters
from evolver_opt.zoo.build import load_expert

HEAD_CHOICES = ("own", "task")


def expert_matrix(
    recipe: Any, split: str = "test", *, heads: str = "own", per_split: int | None = None
) -> dict[str, dict[str, float]]:
    """Accuracy of each cached expert of ``recipe`` (rows) on each domain's ``split`` (columns).

    ``heads="own"``: the row expert as it is, its own head on every domain (one shared label
    space). ``heads="task"``: the row expert's body with the column task's head, taken from that
    task's expert (separate heads, other label spaces): what a merged body would be scored with.
    ``per_split`` scores a fixed, label-stratified sample of each split.
    """
    if heads not in HEAD_CHOICES:
        raise ConfigError(f"heads={heads!r} is not one of {list(HEAD_CHOICES)}")
    splits = [s.subset(per_split) for s in report_splits(recipe.domains, split)]
    if heads == "own":
        return _own_head_matrix(recipe, splits)
    return _task_head_matrix(recipe, splits)


def _evaluator(recipe: Any, model: Any, tokenizer: Any, splits: list[Split]) -> Evaluator:
    return Evaluator(
        model,
        tokenizer,
        splits,
        batch_size=recipe.eval_batch_size,
        max_length=recipe.max_length,
    )


def _own_head_matrix(recipe: Any, splits: list[Split]) -> dict[str, dict[str, float]]:
    matrix: dict[str, dict[str, float]] = {}
    for expert in recipe.domains:
        model, tokenizer = load_expert(recipe.expert_dir(expert))
        ev = _evaluator(recipe, model, tokenizer, splits)
        matrix[expert] = {s.domain: ev.evaluate(s.key).accuracy for s in splits}
    return matrix


def _task_head_matrix(recipe: Any, splits: list[Split]) -> dict[str, dict[str, float]]:
    """Column by column: the task's expert, its body overwritten by each row expert's body."""
    import torch

    bodies: dict[str, dict[str, torch.Tensor]] = {}
    matrix: dict[str, dict[str, float]] = {e: {} for e in recipe.domains}
    for split in splits:
        model, tokenizer = load_expert(recipe.expert_dir(split.domain))
        params = dict(model.named_parameters())
        head = set(head_parameters(model, list(params)))
        ev = _evaluator(recipe, model, tokenizer, [split])
        for expert in recipe.domains:
            if expert not in bodies:
                folder = recipe.expert_dir(expert)
                state: dict[str, torch.Tensor] = {}
                for file in sorted(folder.glob("*.safetensors")):
                    state.update(load_file(file))
                bodies[expert] = state
            state = bodies[expert]
            with torch.no_grad():
                for name, param in params.items():
                    if name in head:
                        continue
                    if name not in state:
                        raise CheckpointError(
                            f"expert {expert!r} has no tensor {name!r} (in {split.domain!r}'s model)"
                        )
                    param.copy_(state[name])
            matrix[expert][split.domain] = ev.evaluate(split.key).accuracy
    return matrix


def format_matrix(matrix: dict[str, dict[str, float]], domains: Sequence[str]) -> str:
    """Rows: experts; columns: evaluation domains; the diagonal is in-domain; a mean column."""
    width = max(len(d) for d in domains) + 1
    width = max(width, 7)
    head = f"{'expert/data':<{width}}" + "".join(f"{d:>{width}}" for d in domains)
    head += f"{'mean':>{width}}"
    lines = [head, "-" * len(head)]
    for expert, row in matrix.items():
        cells = "".join(
            f"{('*' if d == expert else '') + format(row[d], '.3f'):>{width}}" for d in domains
        )
        mean = sum(row[d] for d in domains) / len(domains)
        lines.append(f"{expert:<{width}}" + cells + f"{mean:>{width}.3f}")
    return "\n".join(lines) + "\n(* = in-domain)"
