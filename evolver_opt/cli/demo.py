"""``evolver-opt demo``: the whole product on embedded defaults, first run included.

Prepares the data, builds the MiniLM expert zoo (cached: a second run reuses it), runs a small
compare (Evolver, the project's best variant ``evolver-plus``, vs CMA-ES vs random, all in the
blend of Iso-CTS, WUDI and TSV-M: the demo study's form) into a SQLite database and prints the
table, each of those merges tuned on dev beside them.
``--synthetic`` runs the same compare on a synthetic merge-shaped problem instead (seconds, no
models).
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import click

from evolver_opt.cli._options import report_folder_option, storage_option, threads_option

DEMO_SAMPLERS = ("evolver-plus", "cmaes", "random")
# In a method form: the floor beside the best static merge (the form's own, tuned on dev) and
# the experts; the eight-task benchmark in the README ranks every other static merge.
FORM_STATIC = ("average",)


@click.command()
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=None,
    help="Trials per sampler (default: 25; synthetic: 60).",
)
@storage_option
@report_folder_option("runs/demo")
@click.option(
    "--study",
    "study_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Another study file.",
)
@click.option(
    "--synthetic", is_flag=True, help="A synthetic problem instead of real models (seconds)."
)
@click.option(
    "--groups",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Synthetic: coefficient groups per model.",
)
@threads_option
def demo(
    budget: int | None,
    storage: str | None,
    out: str | None,
    study_file: str | None,
    synthetic: bool,
    groups: int,
) -> None:
    """Run a small compare (Evolver vs CMA-ES vs random, in the blend of Iso-CTS, WUDI and TSV-M)
    and print the table."""
    import optuna

    from evolver_opt.errors import EvolverError
    from evolver_opt.paths import runs_dir
    from evolver_opt.runtime.storage import default_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or default_url()
    start = time.perf_counter()
    try:
        if synthetic:
            _synthetic(budget or 60, url, groups)
        else:
            _real(budget, url, Path(out) if out else runs_dir() / "demo", study_file)
    except EvolverError as exc:  # one line, no traceback
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"\nDone in {time.perf_counter() - start:.0f} s. Studies are in {url}; inspect them with:"
    )
    flag = "" if storage is None else f" --storage {url}"
    from evolver_opt.cli._shared import program

    click.echo(f"  {program()} dashboard{flag}    (optuna-dashboard with notes and artifacts)")


def _real(budget: int | None, url: str, out: Path, study_file: str | None) -> None:
    from evolver_opt.errors import EvolverError
    from evolver_opt.experiments.compare import STATIC_METHODS, run_compare
    from evolver_opt.reports.report import markdown, write_report
    from evolver_opt.search.config import load_config
    from evolver_opt.search.forms import form_method
    from evolver_opt.search.objective import build_setup

    try:
        if study_file is None:
            with resources.as_file(
                resources.files("evolver_opt.experiments") / "demo.toml"
            ) as path:
                config = load_config(path)
        else:
            config = load_config(study_file)
        click.echo(
            f"demo: {config.name}, {len(config.expert_specs())} experts, {config.granularity} granularity"
            + (f", {config.dev_per_split} dev examples per domain" if config.dev_per_split else "")
        )
        setup = build_setup(config)  # prepares data and builds the zoo on the first run
        n_trials = budget or config.n_trials
        rows = run_compare(
            setup,
            DEMO_SAMPLERS,
            seeds=1,
            n_trials=n_trials,
            storage=url,
            echo=click.echo,
            progress=True,
            static_methods=FORM_STATIC if form_method(config.form) else STATIC_METHODS,
        )
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    title = f"demo: {config.name} ({config.granularity}), {n_trials} trials per sampler"
    report = write_report(rows, out, title=title, command="evolver-opt demo", storage=url)
    click.echo(
        "\n" + markdown(rows, title=title, command="evolver-opt demo").split("## Every study")[0]
    )
    click.echo(f"report: {report}")


def _synthetic(budget: int, url: str, groups: int) -> None:
    from evolver_opt.errors import EvolverError
    from evolver_opt.experiments import synthetic
    from evolver_opt.reports.notes import ATTR_PROBLEM
    from evolver_opt.reports.report import annotate_run
    from evolver_opt.runtime.storage import open_storage
    from evolver_opt.search.runner import claim_study
    from evolver_opt.search.samplers import make_sampler

    opened = open_storage(url)
    n_models = 4
    layout = synthetic.genome(n_models, groups)
    points = layout.start_points()
    rows = []
    for sampler_name in DEMO_SAMPLERS:
        study_name = f"demo-synthetic-g{groups}-{sampler_name}-seed0"
        sampler = make_sampler(sampler_name, seed=0, x0=points[-1], budget=budget)
        problem = {"problem": "synthetic-merge", "n_models": n_models, "groups": groups}
        try:  # minimized: the loss; an evolver-opt study with a hash like every other
            study = claim_study(
                study_name,
                opened,
                sampler,
                identity=problem,
                sampler_json={"name": sampler_name, "seed": 0, "options": {}},
                config_json=problem,
                initial_points=points,
                direction="minimize",
            )
        except EvolverError as exc:
            raise click.ClickException(str(exc)) from None
        if ATTR_PROBLEM not in study.user_attrs:
            study.set_user_attr(
                ATTR_PROBLEM, f"synthetic merge-shaped loss, {n_models} models x {groups} groups"
            )
        remaining = budget - sum(t.state.is_finished() for t in study.trials)
        start = time.perf_counter()
        if remaining > 0:
            click.echo(f"{sampler_name}: {remaining} trials ...")
            study.optimize(synthetic.objective("merge", n_models, groups), n_trials=remaining)
            annotate_run(study, url)  # optuna-dashboard note and artifacts
        else:
            click.echo(f"{sampler_name}: already finished ({budget} trials)")
        rows.append(
            (sampler_name, study.best_value, len(study.trials), time.perf_counter() - start)
        )
    uniform = synthetic.loss_function("merge", n_models, groups)(layout.uniform())
    click.echo(f"\nSynthetic merge search, {n_models} models x {groups} groups (lower is better)")
    click.echo(f"uniform average: {uniform:.4f}\n")
    click.echo(f"{'sampler':<10} {'best loss':>10} {'trials':>7} {'seconds':>8}")
    for name, best, n, seconds in rows:
        click.echo(f"{name:<10} {best:>10.4f} {n:>7} {seconds:>8.1f}")
