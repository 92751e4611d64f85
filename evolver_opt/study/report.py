"""Compare reports: ``report.md``, ``results.json`` and best-so-far plots (PNG and HTML)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evolver_opt.study.compare import Row, rows_as_json


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _mib(value: float | None) -> str:
    """Peak resident memory of a study (the whole process, shared setup included)."""
    return "-" if value is None else f"{value:.0f}"


def markdown(rows: Sequence[Row], *, title: str, command: str, notes: Sequence[str] = ()) -> str:
    samplers = [r for r in rows if r.kind == "sampler"]
    lines = [f"# {title}", "", f"Command: `{command}`", ""]
    legend = (
        "Selection is by dev score only; test scores are of the best-by-dev model. `trial s`: the"
        " study's finished trials' durations, summed (sampler, merge and evaluation; the same after"
        " a resume). `peak RSS MiB`: the study's peak resident memory, the whole process."
    )
    lines += [legend, ""]
    lines += ["## Medians over seeds", ""]
    lines += [
        "| sampler | seeds | best dev | test in-domain | test out-of-domain | trials | trial s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r.name for r in samplers):
        group = [r for r in samplers if r.name == name]

        def med(attr: str, group: list[Row] = group) -> float | None:
            values = [getattr(r, attr) for r in group if getattr(r, attr) is not None]
            return float(np.median(values)) if values else None

        lines.append(
            f"| {name} | {len(group)} | {_fmt(med('best_dev'))} | {_fmt(med('test_in'))} | "
            f"{_fmt(med('test_out'))} | {med('trials'):.0f} | {med('wall_s'):.0f} | "
            f"{_mib(med('peak_rss_mb'))} |"
        )
    lines += ["", "## Static merges and experts alone", ""]
    lines += [
        "| kind | name | dev | test in-domain | test out-of-domain |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r.kind != "sampler":
            lines.append(
                f"| {r.kind} | {r.name} | {_fmt(r.best_dev)} | {_fmt(r.test_in)} | {_fmt(r.test_out)} |"
            )
    lines += ["", "## Every study", ""]
    lines += [
        "| sampler | seed | study | best dev | test in-domain | test out-of-domain | trials | trial s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in samplers:
        lines.append(
            f"| {r.name} | {r.seed} | {r.study_name} | {_fmt(r.best_dev)} | {_fmt(r.test_in)} | "
            f"{_fmt(r.test_out)} | {r.trials} | {r.wall_s:.0f} | {_mib(r.peak_rss_mb)} |"
        )
    lines += ["", "![best-so-far dev score](best_so_far.png)", ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_report(
    rows: Sequence[Row],
    out_dir: Path,
    *,
    title: str,
    command: str,
    notes: Sequence[str] = (),
    storage: str | None = None,
) -> Path:
    """Write the report files into ``out_dir``; returns the path of ``report.md``.

    With the ``storage`` URL of the compared studies, each study also gets its pictures
    (population over time for Evolver, the best trial's coefficients) in ``out_dir``, and its
    optuna-dashboard note and artifacts (:mod:`evolver_opt.study.notes`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps({"title": title, "command": command, "rows": rows_as_json(rows)}, indent=1)
    )
    plot_png(rows, out_dir / "best_so_far.png")
    plot_html(rows, out_dir / "best_so_far.html")
    report = out_dir / "report.md"
    text = markdown(rows, title=title, command=command, notes=notes)
    views = _study_views(rows, out_dir, storage) if storage is not None else {}
    if views:
        text += "\n## Per study (also in optuna-dashboard: note and artifacts)\n\n"
        for study_name, images in views.items():
            if images:
                text += f"### {study_name}\n\n"
                text += "".join(f"![{p.stem}]({p.name})\n" for p in images)
    report.write_text(text)
    if storage is not None:
        _annotate(views, out_dir, storage)
    return report


def _study_views(rows: Sequence[Row], out_dir: Path, storage: str) -> dict[str, list[Path]]:
    """Per compared study: its pictures, written into ``out_dir``."""
    import optuna

    from evolver_opt.integrations.storage import open_storage
    from evolver_opt.study.notes import ATTR_SAMPLER, best_trial, has_coefficients, safe_filename
    from evolver_opt.study.views import plot_best_leaning, plot_population

    opened = open_storage(storage, heartbeat_interval=None)
    views: dict[str, list[Path]] = {}
    for row in rows:
        if row.kind != "sampler" or not row.study_name:
            continue
        study = optuna.load_study(study_name=row.study_name, storage=opened)
        stem = safe_filename(row.study_name)
        images = []
        if has_coefficients(best_trial(study)):
            images.append(plot_best_leaning(study, out_dir / f"best_coefficients-{stem}.png"))
        if images and (study.user_attrs.get(ATTR_SAMPLER) or {}).get("name") == "evolver":
            images.insert(0, plot_population(study, out_dir / f"population-{stem}.png"))
        views[row.study_name] = images
    return views


def _annotate(views: dict[str, list[Path]], out_dir: Path, storage: str) -> None:
    """Dashboard note and artifacts (recipe, report, plots, the study's pictures) per study."""
    import optuna

    from evolver_opt.integrations.storage import open_storage
    from evolver_opt.study.notes import annotate_study, artifact_dir

    opened = open_storage(storage, heartbeat_interval=None)
    shared = [out_dir / n for n in ("report.md", "best_so_far.png", "best_so_far.html")]
    for study_name, images in views.items():
        study = optuna.load_study(study_name=study_name, storage=opened)
        annotate_study(study, artifacts=artifact_dir(storage), files=[*shared, *images])


def _bands(
    rows: Sequence[Row], x_attr: str
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per sampler: x, median, lower and upper quartile of best-so-far dev over seeds."""
    out = {}
    for name in dict.fromkeys(r.name for r in rows if r.kind == "sampler"):
        group = [r for r in rows if r.kind == "sampler" and r.name == name and r.curve]
        if not group:
            continue
        n = min(len(r.curve) for r in group)
        curves = np.array([r.curve[:n] for r in group])
        if x_attr == "trials":
            x = np.arange(1, n + 1)
        else:
            x = np.median(np.array([r.examples[:n] for r in group]), axis=0)
        out[name] = (
            x,
            np.median(curves, axis=0),
            np.quantile(curves, 0.25, axis=0),
            np.quantile(curves, 0.75, axis=0),
        )
    return out


def plot_png(rows: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x_attr, label in (
        (axes[0], "trials", "trials"),
        (axes[1], "examples", "dev examples evaluated (forward passes)"),
    ):
        for name, (x, med, lo, hi) in _bands(rows, x_attr).items():
            ax.plot(x, med, label=name)
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.set_xlabel(label)
        ax.set_ylabel("best dev score so far")
    for r in rows:
        if r.kind == "static" and r.name == "average":
            for ax in axes:
                ax.axhline(
                    r.best_dev, color="grey", linestyle="--", linewidth=1, label="uniform average"
                )
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_html(rows: Sequence[Row], path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, (x, med, lo, hi) in _bands(rows, "trials").items():
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([x, x[::-1]]),
                y=np.concatenate([hi, lo[::-1]]),
                fill="toself",
                opacity=0.2,
                line={"width": 0},
                name=f"{name} IQR",
                showlegend=False,
            )
        )
        fig.add_trace(go.Scatter(x=x, y=med, name=name, mode="lines"))
    fig.update_layout(xaxis_title="trials", yaxis_title="best dev score so far (median over seeds)")
    fig.write_html(path, include_plotlyjs="cdn")


def annotate_run(study: Any, storage: str) -> list[str]:
    """After ``evolver-opt run``: the study's note and artifacts (best recipe, its pictures)."""
    import tempfile

    from evolver_opt.study.notes import (
        ATTR_SAMPLER,
        annotate_study,
        artifact_dir,
        best_trial,
        has_coefficients,
    )
    from evolver_opt.study.views import plot_best_leaning, plot_population

    with tempfile.TemporaryDirectory() as tmp:
        images = []
        if has_coefficients(best_trial(study)):
            images.append(plot_best_leaning(study, Path(tmp) / "best_coefficients.png"))
            if (study.user_attrs.get(ATTR_SAMPLER) or {}).get("name") == "evolver":
                images.insert(0, plot_population(study, Path(tmp) / "population.png"))
        return annotate_study(study, artifacts=artifact_dir(storage), files=images)
