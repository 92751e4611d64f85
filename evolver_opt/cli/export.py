"""``evolver-opt export``: write a study trial's merge as a normal Hugging Face model.

With separate task heads the default is every head: one folder per task, each loading with
``AutoModelForSequenceClassification.from_pretrained(folder)`` alone, sharing one body file
(``evolver_opt.export.folders.HEADS_LAYOUT``). Every export carries a model card (``README.md``).
"""

from __future__ import annotations

from typing import Any

import click

from evolver_opt.cli._options import stored_study_options, threads_option


@click.command()
@stored_study_options
@click.option(
    "--trial", "trial_ref", default="best", show_default=True, help="A trial number or 'best'."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--head", default=None,
    help="With separate task heads: 'all' (default: one folder per task, sharing the body "
    "file) or one task's name (one folder with that head). Merged heads: ignored.",
)  # fmt: skip
@click.option(
    "--mergekit-yaml/--no-mergekit-yaml", default=False, show_default=True,
    help="Also write mergekit_config.yml, a mergekit configuration reproducing the merge "
    "(refused, with the reason, for merges mergekit cannot express).",
)  # fmt: skip
@click.option(
    "--test-scores/--no-test-scores", default=False, show_default=True,
    help="Score the merge on the study's test splits for the model card (reporting only).",
)  # fmt: skip
@click.option("--overwrite/--no-overwrite", default=False, show_default=True)
@threads_option
@click.pass_context
def export(
    ctx: click.Context,
    storage: str | None,
    study_name: str,
    trial_ref: str,
    out: str,
    head: str | None,
    mergekit_yaml: bool,
    test_scores: bool,
    overwrite: bool,
) -> None:
    """Export trial TRIAL of STUDY_NAME (merge recipe and model card included) to OUT."""
    from evolver_opt.cli._command import command_line
    from evolver_opt.cli._shared import load_named_study
    from evolver_opt.errors import EvolverError
    from evolver_opt.export import export_merged
    from evolver_opt.export.folders import ALL_HEADS
    from evolver_opt.reports.notes import ATTR_PROBLEM
    from evolver_opt.search.attributes import ATTR_SAMPLER
    from evolver_opt.search.config import parse_config
    from evolver_opt.search.forms import form_method
    from evolver_opt.search.objective import build_engine, build_setup, coefficients_of
    from evolver_opt.search.runner import ATTR_CONFIG

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
        trial = _pick_trial(study, config, trial_ref)  # weight-space studies are refused here
        form = form_method(config.form)
        if form is None:
            engine = build_engine(config)
        else:  # the coefficients weigh a method's parts: build them as a study does
            engine = build_setup(config, precision_check=False).engine
        if head is not None and head != ALL_HEADS and head not in engine.model_names:
            raise click.BadParameter(
                f"{head!r} is not a task of this study; expected 'all' or one of "
                f"{engine.model_names}",
                param_hint="--head",
            )
        head = None if engine.heads_merged else (head or ALL_HEADS)
        coefficients = coefficients_of(config, engine, trial.params)
        recipe: dict[str, Any] = {
            "study": study_name,
            "trial": trial.number,
            "sampler": study.user_attrs.get(ATTR_SAMPLER),
            "dev_score": trial.value,
            "metric": config.metric,
            "dev_scores": _dev_scores(trial.user_attrs),
            "params": trial.params,
            "command": command_line(ctx),
        }
        if form is not None:
            recipe["form"] = form
        engine.apply(coefficients, form=form)
        if test_scores:
            recipe["test_scores"] = _test_scores(config, engine)
        path = export_merged(
            engine, out, coefficients if form is None else None, recipe, head=head,
            overwrite=overwrite,
            mergekit=mergekit_yaml,
        )  # fmt: skip
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    what = f"{engine.n_models} task folders" if head == ALL_HEADS else "one folder"
    click.echo(f"exported trial {trial.number} (dev {trial.value:.4f}) to {path} ({what})")


def _dev_scores(attrs: dict[str, Any]) -> dict[str, float]:
    """Task -> dev score, from a trial's ``dev:<task>/dev`` user attributes."""
    return {
        key.removeprefix("dev:").split("/")[0]: float(value)
        for key, value in attrs.items()
        if key.startswith("dev:") and isinstance(value, (int, float))
    }


def _test_scores(config: Any, engine: Any) -> dict[str, float]:
    """The working model's score on each of the study's test splits, each task with its own
    head (reporting only, never a choice); the engine's active head is put back."""
    from evolver_opt.data.pipeline import ensure_prepared
    from evolver_opt.evaluation.tokenizer import shared_tokenizer
    from evolver_opt.experiments.rows import TestReporter
    from evolver_opt.search.objective import MergeSetup

    ensure_prepared()
    experts = [(m.name, m.path) for m in engine.checkpoints.models]
    tokenizer = shared_tokenizer([*experts, ("base", engine.checkpoints.base.path)])
    setup = MergeSetup(config, engine, None, tokenizer, [], {})  # type: ignore[arg-type]
    active = engine.active_head
    try:
        return TestReporter(setup)()
    finally:
        if active is not None:
            engine.use_head(active)


def _pick_trial(study, config, ref: str):
    """The trial to export (:func:`evolver_opt.experiments.export_choice.exportable_trial`)."""
    from evolver_opt.experiments.export_choice import exportable_trial

    return exportable_trial(study, config, ref)
