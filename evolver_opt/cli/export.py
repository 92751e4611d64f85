"""``evolver-opt export``: write a study trial's merge as a normal Hugging Face model."""

from __future__ import annotations

import click

from evolver_opt.cli._options import stored_study_options


@click.command()
@stored_study_options
@click.option(
    "--trial", "trial_ref", default="best", show_default=True, help="A trial number or 'best'."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--overwrite/--no-overwrite", default=False, show_default=True)
def export(storage: str | None, study_name: str, trial_ref: str, out: str, overwrite: bool) -> None:
    """Export trial TRIAL of STUDY_NAME (merge recipe included) to OUT."""
    from evolver_opt.cli._shared import load_named_study
    from evolver_opt.errors import EvolverError
    from evolver_opt.merge import export_merged
    from evolver_opt.study.config import parse_config
    from evolver_opt.study.notes import ATTR_PROBLEM
    from evolver_opt.study.objective import build_engine, coefficients_of
    from evolver_opt.study.runner import ATTR_CONFIG

    try:
        study = load_named_study(storage, study_name)
        stored = study.user_attrs.get(ATTR_CONFIG)
        if ATTR_PROBLEM in study.user_attrs:
            raise click.ClickException(
                f"study {study_name!r} is a synthetic problem "
                f"({study.user_attrs[ATTR_PROBLEM]}): it has coefficients but no models to export"
            )
        if stored is None:
            raise click.ClickException(
                f"study {study_name!r} was not made by evolver-opt (no {ATTR_CONFIG})"
            )
        config = parse_config(stored, source=f"study {study_name!r}")
        trial = _pick_trial(study, config, trial_ref)
        engine = build_engine(config)
        recipe = {
            "study": study_name,
            "trial": trial.number,
            "dev_score": trial.value,
            "params": trial.params,
        }
        path = export_merged(
            engine, out, coefficients_of(config, engine, trial.params), recipe, overwrite=overwrite
        )
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported trial {trial.number} (dev {trial.value:.4f}) to {path}")


def _pick_trial(study, config, ref: str):
    """The trial to export (:func:`evolver_opt.study.export_choice.exportable_trial`)."""
    from evolver_opt.study.export_choice import exportable_trial

    return exportable_trial(study, config, ref)
