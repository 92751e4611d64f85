"""Evolver-specific pictures of one study, read from its storage (PNG, matplotlib).

* :func:`plot_population`: the population over time. Each Evolver individual (a slot: an
  expert alone, a static merge, or a random start) is, after every finished trial, the best
  COMPLETE trial of its lineage so far (greedy selection). Top: each individual's dev score;
  bottom: the expert its coefficients lean on most (largest mean coefficient over groups;
  "mixed" when no expert leads the next by 5%).
* :func:`plot_best_leaning`: the best trial's coefficients as an expert x group heatmap: which
  expert the best individual leans on in each group (layer, tensor, ...).

Best-so-far curves per sampler are drawn by :mod:`evolver_opt.reports.report` (``best_so_far.png``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from evolver_opt.core.population import Lineage, Record, better, slot_of, split
from evolver_opt.integrations.optuna_sampler import trial_records
from evolver_opt.reports.notes import best_trial, coefficient_matrix, row_names, study_config


@dataclass
class PopulationHistory:
    """Per slot and per finished trial: the individual's dev score and leaning expert."""

    trial_numbers: list[int]  # x axis: the finished trial after which each column is taken
    values: np.ndarray  # slots x steps, NaN while a slot has no COMPLETE trial
    leaning: np.ndarray  # slots x steps: index into ``experts``, len(experts) mixed, -1 empty
    experts: list[str]
    starts: dict[int, str]  # slot -> what the individual started as ("vader-tweets alone", ...)


MIXED_MARGIN = 0.05  # the top expert leads the next by less than 5% of its weight: "mixed"


def _leaning(weights: np.ndarray) -> int:
    """Index of the expert with the largest mean coefficient, or ``len(weights)`` (mixed)."""
    order = np.argsort(weights)[::-1]
    top = weights[order[0]]
    if len(weights) > 1 and top - weights[order[1]] < MIXED_MARGIN * abs(top):
        return len(weights)
    return int(order[0])


def start_label(trial: optuna.trial.FrozenTrial, models: list[str], c: np.ndarray) -> str:
    """What a first individual is: an expert alone, the uniform average, another given point,
    or a random start drawn by the sampler."""
    lineage = Lineage.from_attrs(trial.system_attrs)
    if lineage is not None:
        return "random" if lineage.role == "init" else "offspring"
    used = [i for i in range(c.shape[0]) if np.any(c[i] != 0)]
    if len(used) == 1:
        return f"{models[used[0]]} alone"
    if c.size and np.allclose(c, c.flat[0]):
        return "average"
    return "given point"


def population_history(study: optuna.Study) -> PopulationHistory:
    """Replay the study's finished trials in order (greedy selection as the sampler does it,
    ``core.population``); see the module docstring."""
    config = study_config(study)
    trials = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
        key=lambda t: t.number,
    )
    tie_break = (config.get("evolver") or {}).get("tie_break")
    records = trial_records(study, trials, tie_break)
    start_slot = {n: i for i, n in enumerate(split(records)[0].start_points)}
    experts = row_names(config)
    best: dict[int, tuple[float, int]] = {}  # slot -> (value, leaning expert)
    incumbent: dict[int, Record] = {}  # slot -> its record
    starts: dict[int, str] = {}
    columns: list[dict[int, tuple[float, int]]] = []
    numbers = []
    for t, r in zip(trials, records, strict=True):
        slot = slot_of(r, start_slot)
        if slot is not None and r.value is not None:
            models, _, c = coefficient_matrix(t.params, experts, config.get("form", ""))
            if not experts:
                experts = models
            starts.setdefault(slot, start_label(t, models, c))
            if slot not in incumbent or better(r, incumbent[slot]):
                incumbent[slot] = r
                best[slot] = (float(t.value), _leaning(c.mean(axis=1)) if c.size else -1)
        columns.append(dict(best))
        numbers.append(t.number)
    n_slots = max((s for col in columns for s in col), default=-1) + 1
    values = np.full((n_slots, len(columns)), np.nan)
    leaning = np.full((n_slots, len(columns)), -1, dtype=int)
    for j, col in enumerate(columns):
        for slot, (value, lean) in col.items():
            values[slot, j], leaning[slot, j] = value, lean
    return PopulationHistory(numbers, values, leaning, list(experts), starts)


def plot_population(study: optuna.Study, path: Path) -> Path:
    """Population over time (see the module docstring); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    history = population_history(study)
    if history.values.size == 0:
        raise ValueError(f"study {study.study_name!r} has no COMPLETE trial to draw")
    n_slots = history.values.shape[0]
    extent = (history.trial_numbers[0] - 0.5, history.trial_numbers[-1] + 0.5, n_slots - 0.5, -0.5)
    fig, axes = plt.subplots(2, 1, figsize=(10, 2.2 + 0.5 * n_slots), sharex=True)
    image = axes[0].imshow(
        np.ma.masked_invalid(history.values), aspect="auto", interpolation="nearest",
        cmap="viridis", extent=extent,
    )  # fmt: skip
    fig.colorbar(image, ax=axes[0], label="dev score" if study_config(study) else "value")
    axes[0].set_title(f"{study.study_name}: population over time")
    labels = [*history.experts, "mixed"]
    colors = np.vstack([plt.get_cmap("tab10")(np.arange(len(labels) - 1) % 10), [0.8, 0.8, 0.8, 1]])
    lean = axes[1].imshow(
        np.ma.masked_less(history.leaning, 0), aspect="auto", interpolation="nearest",
        extent=extent, cmap=ListedColormap(colors), vmin=-0.5, vmax=len(labels) - 0.5,
    )  # fmt: skip
    bar = fig.colorbar(lean, ax=axes[1], ticks=range(len(labels)), label="leans on")
    bar.ax.set_yticklabels(labels, fontsize=7)
    names = [f"{i}: {history.starts.get(i, '')}" for i in range(n_slots)]
    for ax in axes:
        ax.set_ylabel("individual")
        ax.set_yticks(range(n_slots), names, fontsize=7)
    axes[1].set_xlabel("trial number")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_best_leaning(study: optuna.Study, path: Path) -> Path:
    """The best trial's coefficients, expert x group; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_trial(study)
    if best is None:
        raise ValueError(f"study {study.study_name!r} has no COMPLETE trial to draw")
    config = study_config(study)
    models, groups, c = coefficient_matrix(best.params, row_names(config), config.get("form", ""))
    height = min(2.0 + 0.22 * len(groups), 30.0)
    fig, ax = plt.subplots(figsize=(2.5 + 1.1 * len(models), height))
    image = ax.imshow(c.T, aspect="auto", interpolation="nearest", cmap="magma")
    fig.colorbar(image, ax=ax, label="coefficient")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(groups)), groups, fontsize=6 if len(groups) > 40 else 8)
    ax.set_title(f"best trial #{best.number} (dev {best.value:.4f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
