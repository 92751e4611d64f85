"""``evolver-opt demo``: Evolver against CMA-ES and random search in one SQLite study database.

Until the model zoo and the study runner land, the demo searches a synthetic merge-shaped
problem (``evolver_opt.study.synthetic``): 4 "models" x 10 groups of coefficients, every
sampler starting from the same points (each model alone and the uniform average).
"""

from __future__ import annotations

import time

import click


@click.command()
@click.option("--budget", default=60, show_default=True, help="Trials per sampler.")
@click.option("--storage", default=None, help="Optuna storage URL (default: sqlite:///runs/demo.db).")
@click.option("--seed", default=0, show_default=True)
@click.option("--groups", default=10, show_default=True, help="Coefficient groups per model.")
def demo(budget: int, storage: str | None, seed: int, groups: int) -> None:
    """Run a small compare (Evolver vs CMA-ES vs random) and print the table."""
    import numpy as np
    import optuna

    from evolver_opt import open_storage
    from evolver_opt.paths import runs_dir
    from evolver_opt.study import synthetic
    from evolver_opt.study.samplers import initial_points, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or f"sqlite:///{runs_dir() / 'demo.db'}"
    opened = open_storage(url)
    n_models = 4
    names = synthetic.param_names(n_models, groups)
    points = initial_points(names, synthetic.model_of(n_models, groups), n_models)
    rows = []
    for sampler_name in ("evolver", "cmaes", "random"):
        study_name = f"demo-synthetic-g{groups}-{sampler_name}-seed{seed}"
        sampler = make_sampler(sampler_name, seed=seed, x0=points[-1], budget=budget)
        study = optuna.create_study(study_name=study_name, storage=opened, sampler=sampler, load_if_exists=True)
        if not study.trials:
            for point in points:
                study.enqueue_trial(point)
        remaining = budget - sum(t.state.is_finished() for t in study.trials)
        start = time.perf_counter()
        if remaining > 0:
            click.echo(f"{sampler_name}: {remaining} trials ...")
            study.optimize(synthetic.objective("merge", n_models, groups), n_trials=remaining)
        rows.append((sampler_name, study.best_value, len(study.trials), time.perf_counter() - start))
    uniform = synthetic.loss_function("merge", n_models, groups)(np.full((n_models, groups), 1.0 / n_models))
    click.echo(f"\nSynthetic merge search, {n_models} models x {groups} groups (lower is better)")
    click.echo(f"uniform average: {uniform:.4f}\n")
    click.echo(f"{'sampler':<10} {'best loss':>10} {'trials':>7} {'seconds':>8}")
    for name, best, n, seconds in rows:
        click.echo(f"{name:<10} {best:>10.4f} {n:>7} {seconds:>8.1f}")
    click.echo(f"\nStudies are in {url}. Inspect them with:\n  optuna-dashboard {url}")
