"""Compare reports: ``report.md``, ``results.json`` and best-so-far plots (PNG and HTML)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evolver_opt.experiments.rows import Row, rows_as_json
from evolver_opt.reports.statistics import Interval, Paired, SamplerRank, gap_closed, rank_samplers
from evolver_opt.search.samplers import COEFFICIENT_EVOLVERS

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _mib(value: float | None) -> str:
    """Peak resident memory of a study (the whole process, shared setup included)."""
    return "-" if value is None else f"{value:.0f}"


@dataclass(frozen=True)
class Ranking:
    """The ranking statistics of a compare (:mod:`evolver_opt.reports.statistics`).

    ``tasks``: the in-domain test keys the test mean averages; ``average``: the static uniform
    average's test mean; ``experts``: the mean over ``tasks`` of each task's expert on its own
    task; ``references``: the static and expert rows with their gap closed."""

    samplers: list[SamplerRank]
    tasks: list[str]
    average: float | None
    experts: float | None
    references: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _in_domain(rows: Sequence[Row]) -> list[str]:
    """The test keys the rows' test mean is over (older rows: the experts' own task keys)."""
    for r in rows:
        if r.test_in_domain:
            return list(r.test_in_domain)
    return [r.name for r in rows if r.kind == "expert" and r.name in r.test]


def ranking(rows: Sequence[Row]) -> Ranking:
    """Rank the sampler rows by mean test over seeds, with intervals, paired tests and the
    fraction of the gap closed between the uniform average and the experts."""
    tasks = _in_domain(rows)
    notes = []
    average = next((r.test_in for r in rows if r.kind == "static" and r.name == "average"), None)
    own = {r.name: r.test[r.name] for r in rows if r.kind == "expert" and r.name in r.test}
    missing = [t for t in tasks if t not in own]
    experts = float(np.mean([own[t] for t in tasks])) if tasks and not missing else None
    if missing:
        notes.append(f"no expert row for {', '.join(missing)}: no ceiling, no gap closed")
    if average is None:
        notes.append("no uniform-average row: no gap closed")
    elif experts is not None and experts <= average:
        notes.append("the uniform average is not below the experts: no gap to close")
    test: dict[str, dict[int, float]] = {}
    dev: dict[str, dict[int, float]] = {}
    correct: dict[str, dict[int, list[list[int]]]] = {}
    for r in rows:
        if r.kind != "sampler" or r.test_in is None or r.seed is None:
            continue
        test.setdefault(r.name, {})[r.seed] = r.test_in
        dev.setdefault(r.name, {})[r.seed] = r.best_dev
        if tasks and all(t in r.test_correct for t in tasks):
            correct.setdefault(r.name, {})[r.seed] = [
                [int(c) for c in r.test_correct[t]] for t in tasks
            ]
    samplers = rank_samplers(
        test, dev, average=average, experts=experts, correct=correct,
        resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED,
    )  # fmt: skip
    references = [
        {"kind": r.kind, "name": r.name, "test_in": r.test_in,
         "gap_closed": gap_closed(r.test_in, average, experts)}
        for r in rows
        if r.kind != "sampler"
    ]  # fmt: skip
    return Ranking(samplers, tasks, average, experts, references, notes)


def headline(rows: Sequence[Row]) -> str:
    """One paragraph that says what a compare shows: the start point, the best search's gain
    over the uniform average, and how much of the gap to the experts it closed."""
    ranked = ranking(rows)
    if ranked.average is None or ranked.experts is None or not ranked.samplers:
        return "No uniform-average or expert rows: nothing to measure the searches against."
    best = ranked.samplers[0]
    static = [g for g in ranked.references if g["kind"] == "static" and g["name"] != "average"]
    top = max(static, key=lambda g: g["test_in"] or 0.0, default=None)

    def gap(value: float | None) -> str:
        return "" if value is None else f", {value:.0%} of the gap"

    text = (
        f"What you see: every search started from the same points with the same budget, choosing "
        f"by dev only; the uniform average (test mean {ranked.average:.4f}) and the experts on "
        f"their own tasks ({ranked.experts:.4f}) bound the table. The best search by test mean, "
        f"{best.name}, reached {best.test.mean:.4f} ({best.test.mean - ranked.average:+.4f} over "
        f"the average{gap(best.gap_closed)})."
    )
    if top is not None and top["test_in"] is not None:
        text += (
            f" The best static merge, {top['name']}, reached {top['test_in']:.4f}"
            f"{gap(top['gap_closed'])}"
            + (": no search beat it on test." if best.test.mean <= top["test_in"] else ".")
        )
    evolver = next((r for r in ranked.samplers if r.name.startswith("evolver")), None)
    if evolver is not None and evolver is not best:
        behind = best.test.mean - evolver.test.mean
        text += f" Evolver ({evolver.name}) reached {evolver.test.mean:.4f}, {behind:.4f} behind"
        text += f" {best.name}" + (
            f" (p = {evolver.versus.p_value:.2f})."
            if evolver.versus is not None and evolver.best_other == best.name
            else "."
        )
    return text


def ranking_as_json(result: Ranking) -> dict[str, Any]:
    return asdict(result)


def _interval(value: Interval) -> str:
    if value.low is None or value.high is None:
        return f"n={value.n}"
    return f"[{value.low:.4f}, {value.high:.4f}]"


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _p(versus: Paired | None) -> str:
    if versus is None:
        return "- (no paired test)"
    if versus.test == "wilcoxon":
        return (
            f"{versus.p_value:.4f} (Wilcoxon, n={versus.n} seeds, {versus.differing} differ,"
            f" min {versus.min_p:.4f})"
        )
    return f"{versus.p_value:.4f} (bootstrap, {versus.n} test examples)"


def ranking_markdown(result: Ranking) -> list[str]:
    """The ``## Ranking`` section: one line per sampler, best mean test first."""
    if not result.samplers:
        return []
    lines = ["## Ranking", ""]
    header = (
        "| rank | sampler | seeds | mean test | 95% CI | best dev (95% CI) | gap closed "
        "| vs best other | difference | p |"
    )
    lines += [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for k, s in enumerate(result.samplers, start=1):
        diff = "-" if s.versus is None else f"{s.versus.difference:+.4f}"
        lines.append(
            f"| {k} | {s.name} | {s.n_seeds} | {s.test.mean:.4f} | {_interval(s.test)} | "
            f"{s.dev.mean:.4f} {_interval(s.dev)} | {_gap(s.gap_closed)} | "
            f"{s.best_other or '-'} | {diff} | {_p(s.versus)} |"
        )
    tasks = ", ".join(result.tasks) or "-"
    legend = (
        f"Test: the mean over the in-domain test splits ({tasks}) of the best-by-dev model; 95% CI:"
        " Student t over seeds. Gap closed: (test - average) / (experts - average), with average"
        f" {_fmt(result.average)} (the static uniform average) and experts"
        f" {_fmt(result.experts)} (each expert on its own task, mean over the tasks): 0 is the"
        " average, 1 the experts. Difference: this sampler minus the best other sampler by mean"
        " test, paired by seed. p: two-sided Wilcoxon signed-rank over the seeds both ran (seeds"
        " with equal scores are dropped; with n differing seeds its exact p cannot go below"
        " 2/2^n, `min`); with one seed, a paired bootstrap"
        f" over the test examples ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}) of"
        " the per-example correctness difference (kept for the accuracy metric only)."
    )
    lines += ["", legend]
    if result.notes:
        lines += ["", *(f"- {n}" for n in result.notes)]
    return [*lines, ""]


def markdown(rows: Sequence[Row], *, title: str, command: str, notes: Sequence[str] = ()) -> str:
    samplers = [r for r in rows if r.kind == "sampler"]
    lines = [f"# {title}", "", f"Command: `{command}`", ""]
    legend = (
        "Selection is by dev score only; test scores are of the best-by-dev model. `trial s`: the"
        " study's finished trials' durations, summed (sampler, merge and evaluation; the same after"
        " a resume). `peak RSS MiB`: the study's peak resident memory, the whole process."
    )
    lines += [legend, "", headline(rows), ""]
    ranked = ranking(rows)
    lines += ranking_markdown(ranked)
    gaps = {(g["kind"], g["name"]): g["gap_closed"] for g in ranked.references}
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
    lines += _task_table(rows)
    lines += _cost_table(samplers)
    lines += ["", "## Static merges and experts alone", ""]
    lines += [
        "| kind | name | dev | test in-domain | test out-of-domain | gap closed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.kind != "sampler":
            lines.append(
                f"| {r.kind} | {r.name} | {_fmt(r.best_dev)} | {_fmt(r.test_in)} | "
                f"{_fmt(r.test_out)} | {_gap(gaps.get((r.kind, r.name)))} |"
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


def _task_table(rows: Sequence[Row]) -> list[str]:
    """Test score per task of each sampler (median over seeds), static merge and expert."""
    tasks = list(dict.fromkeys(t for r in rows for t in r.test))
    if not tasks:
        return []
    lines = ["", "## Test score per task (best-by-dev model; samplers: median over seeds)", ""]
    lines += ["| kind | name | " + " | ".join(tasks) + " | mean |"]
    lines += ["|---|---|" + "---|" * (len(tasks) + 1)]
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kind, r.name), []).append(r)
    for (kind, name), group in groups.items():
        cells = [np.median([r.test[t] for r in group if t in r.test]) for t in tasks]
        lines.append(
            f"| {kind} | {name} | " + " | ".join(f"{c:.4f}" for c in cells)
            + f" | {np.mean(cells):.4f} |"
        )  # fmt: skip
    return lines


def _cost_table(samplers: Sequence[Row]) -> list[str]:
    """What staged scoring and racing saved, and the answers' float32 re-scores."""
    if not samplers:
        return []
    lines = ["", "## Search cost (medians over seeds)", ""]
    lines += [
        (
            "`pruned`: trials stopped by the study's pruner; `race lost`: Evolver offspring stopped"
            " by exact racing; `dev passes saved`: the fraction of the trials' dev forward passes not"
            " run; `best dev fp32`: the answer re-scored in float32 (the study scored in bfloat16)."
        ),
        "",
        "| sampler | pruned | race lost | dev passes saved | best dev | best dev fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r.name for r in samplers):
        group = [r for r in samplers if r.name == name]
        fp32 = [r.best_dev_fp32 for r in group if r.best_dev_fp32 is not None]
        lines.append(
            f"| {name} | {np.median([r.pruned for r in group]):.0f} | "
            f"{np.median([r.race_lost for r in group]):.0f} | "
            f"{np.median([r.examples_saved for r in group]):.1%} | "
            f"{_fmt(float(np.median([r.best_dev for r in group])))} | "
            f"{_fmt(float(np.median(fp32)) if fp32 else None)} |"
        )
    return lines


def rows_from_json(path: Path) -> tuple[dict[str, Any], list[Row]]:
    """A compare's ``results.json``: its payload and its rows (to re-render the report)."""
    payload = json.loads(Path(path).read_text())
    fields = set(Row.__dataclass_fields__)
    return payload, [Row(**{k: v for k, v in r.items() if k in fields}) for r in payload["rows"]]


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
    optuna-dashboard note and artifacts (:mod:`evolver_opt.reports.notes`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "title": title,
        "command": command,
        "rows": rows_as_json(rows),
        "ranking": ranking_as_json(ranking(rows)),
    }
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1))
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

    from evolver_opt.reports.notes import ATTR_SAMPLER, best_trial, has_coefficients, safe_filename
    from evolver_opt.reports.views import plot_best_leaning, plot_population
    from evolver_opt.runtime.storage import open_storage

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
        if (
            images
            and (study.user_attrs.get(ATTR_SAMPLER) or {}).get("name") in COEFFICIENT_EVOLVERS
        ):
            images.insert(0, plot_population(study, out_dir / f"population-{stem}.png"))
        views[row.study_name] = images
    return views


def _annotate(views: dict[str, list[Path]], out_dir: Path, storage: str) -> None:
    """Dashboard note and artifacts (recipe, report, plots, the study's pictures) per study."""
    import optuna

    from evolver_opt.reports.notes import annotate_study, artifact_dir
    from evolver_opt.runtime.storage import open_storage

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

    from evolver_opt.reports.notes import (
        ATTR_SAMPLER,
        annotate_study,
        artifact_dir,
        best_trial,
        has_coefficients,
    )
    from evolver_opt.reports.views import plot_best_leaning, plot_population

    with tempfile.TemporaryDirectory() as tmp:
        images = []
        if has_coefficients(best_trial(study)):
            images.append(plot_best_leaning(study, Path(tmp) / "best_coefficients.png"))
            if (study.user_attrs.get(ATTR_SAMPLER) or {}).get("name") in COEFFICIENT_EVOLVERS:
                images.insert(0, plot_population(study, Path(tmp) / "population.png"))
        return annotate_study(study, artifacts=artifact_dir(storage), files=images)
