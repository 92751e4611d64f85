"""What a study shows in optuna-dashboard: a Markdown note and artifacts.

The note explains the study (experts, granularity, merge form, sampler and its settings, dev
and test sets, trial counts, the best trial's recipe); the artifacts are the best recipe as
JSON and whatever report files the caller hands over (compare plots, Evolver views). Trial user
attributes (``dev:<split>``, ``raced``, ``merge_s``, ``eval_s``) are set by the objective and
show in the dashboard's trial table as they are.

Artifacts live in a file-system artifact store beside the study database
(:func:`artifact_dir`); ``evolver-opt dashboard`` serves the same folder by default.
Re-annotating a study replaces its artifacts of the same file name instead of piling up copies.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from evolver_opt.core.genome import PREFIX, Genome
from evolver_opt.core.population import preview
from evolver_opt.errors import StorageError
from evolver_opt.paths import runs_dir
from evolver_opt.search.attributes import (
    ATTR_CONFIG,
    ATTR_PRECISION,
    ATTR_PROBLEM,
    ATTR_RERANK,
    ATTR_SAMPLER,
)

ARTIFACT_PREFIX = "artifacts:"  # Optuna's study system-attribute prefix for artifact metadata
MAX_NOTE_GROUPS = 24  # groups listed in the note's recipe table (the JSON artifact has all)


def artifact_dir(url: str | None) -> Path:
    """The artifact folder of the storage at ``url``: ``<db>-artifacts`` beside a SQLite or
    journal file, else ``runs/artifacts``."""
    from evolver_opt.runtime.storage import default_url

    url = url or default_url()
    path: str | None = None
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
    elif url.startswith("journal:") or url.endswith(".log"):
        path = url.removeprefix("journal:")
    if path and path != ":memory:":
        file = Path(path)
        return file.with_name(f"{file.stem}-artifacts")
    return runs_dir() / "artifacts"


def coefficient_matrix(
    params: dict[str, float], models: Sequence[str] = (), form: str = "task_arithmetic"
) -> tuple[list[str], list[str], np.ndarray]:
    """(models, groups, models x groups coefficients as merged) of a trial's parameters, missing
    cells 0 (:meth:`evolver_opt.core.genome.Genome.from_params` and ``normalized``)."""
    g = Genome.from_params(params, models)
    c = g.normalized({n: params.get(n, 0.0) for n in g.param_names}, form)
    return list(g.models), list(g.groups), c


def study_config(study: optuna.Study) -> dict[str, Any]:
    """The study's stored config (empty for a study not made by ``open_study``)."""
    config = study.user_attrs.get(ATTR_CONFIG)
    return config if isinstance(config, dict) else {}


def expert_names(config: dict[str, Any]) -> list[str]:
    experts = config.get("experts") or []
    names = [e["name"] for e in experts if isinstance(e, dict) and "name" in e]
    if not names and isinstance(config.get("zoo"), dict):
        names = list(config.get("zoo_experts") or config["zoo"].get("domains") or [])
    return names


def row_names(config: dict[str, Any]) -> list[str]:
    """Whose coefficients a trial holds: the experts, or a blend form's methods
    (``"iso_cts+wudi"``: search/forms.py)."""
    form = str(config.get("form") or "")
    return form.split("+") if "+" in form else expert_names(config)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best COMPLETE trial, or None when there is none yet."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    return study.best_trial


def best_recipe(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial as a JSON recipe: which coefficients to apply to which experts."""
    best = best_trial(study)
    if best is None:
        return None
    config = study_config(study)
    form = config.get("form", "task_arithmetic")
    models, groups, c = coefficient_matrix(best.params, row_names(config), form)
    return {
        "study": study.study_name,
        "trial": best.number,
        "dev_score": best.value,
        "metric": config.get("metric"),
        "dev_scores": {
            k.removeprefix("dev:"): v for k, v in best.user_attrs.items() if k.startswith("dev:")
        },
        "base": base_of(config),
        "experts": models,
        "granularity": config.get("granularity"),
        "form": form,
        "groups": groups,
        "coefficients": {m: dict(zip(groups, row.tolist(), strict=True)) for m, row in zip(models, c, strict=True)},
        "params": best.params,
    }  # fmt: skip


def base_of(config: dict[str, Any]) -> str | None:
    """The base model of a stored study config: ``[study] base``, else the zoo recipe's."""
    return config.get("base") or (config.get("zoo") or {}).get("base")


def _fmt_list(values: Any) -> str:
    values = list(values or [])
    return ", ".join(f"`{v}`" for v in values) if values else "none"


def has_coefficients(trial: optuna.trial.FrozenTrial | None) -> bool:
    """Whether ``trial`` holds merge coefficients ``w.<model>.<group>`` (weight-space studies,
    e.g. element granularity, keep their weights as lineage instead)."""
    return trial is not None and any(n.startswith(PREFIX) for n in trial.params)


def _recipe_table(recipe: dict[str, Any]) -> list[str]:
    models, groups = recipe["experts"], recipe["groups"]
    if not groups:
        return ["No per-group coefficients: this study's weights are kept as lineage."]
    lines = ["| group | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for g in groups[:MAX_NOTE_GROUPS]:
        cells = " | ".join(f"{recipe['coefficients'][m][g]:.3f}" for m in models)
        lines.append(f"| `{g}` | {cells} |")
    if len(groups) > MAX_NOTE_GROUPS:
        lines.append(f"| ... {len(groups) - MAX_NOTE_GROUPS} more groups | " + " | " * len(models))
    means = " | ".join(
        f"**{np.mean(list(recipe['coefficients'][m].values())):.3f}**" for m in models
    )
    lines.append(f"| **mean** | {means} |")
    return lines


def _pruner_line(config: dict[str, Any]) -> str:
    pruner = config.get("pruner") or {}
    if pruner.get("name", "none") == "none":
        return "- **Pruner**: none (every non-Evolver trial scores the whole dev set)"
    options = ", ".join(f"{k}={v}" for k, v in (pruner.get("options") or {}).items())
    return (
        f"- **Pruner**: `{pruner['name']}`{f' ({options})' if options else ''}, dev scored in "
        f"stages {pruner.get('stages')} (Evolver trials race their parent instead)"
    )


def _precision_line(check: dict[str, Any] | None) -> str:
    if not check:
        return "- **Precision**: float32 (not recorded)"
    line = f"- **Precision**: {check['used']} (setting {check['setting']}: {check['reason']})"
    agreement = check.get("agreement") or {}
    if agreement:
        low = min(agreement, key=agreement.__getitem__)
        line += (
            f"; bf16/fp32 argmax agreement on the start points min {agreement[low]:.4f}"
            f" ({low}), threshold {check['threshold']}; answers re-scored in float32 for reports"
        )
    return line


def _rerank_lines(study: optuna.Study, rerank: dict[str, Any] | None) -> list[str]:
    """The note's section on the top-k re-ranking (``evolver-opt rerank``), if one was run;
    marked stale (no answer offered) once newer trials rank in the study's top k."""
    if not rerank:
        return []
    from evolver_opt.experiments.rerank import unranked_newcomers

    newcomers = unranked_newcomers(study, rerank)
    rows = {t["trial"]: t for t in rerank["trials"]}
    answer = rows[rerank["answer"]]
    sample = rerank["dev_per_split"]
    scored = (
        f"The top {rerank['k']} trials by study dev ({rerank['study_dev_per_split']}"
        f" examples per split) were re-scored on {'all' if sample is None else sample} examples"
        f" per dev split ({rerank['precision']})"
    )
    if newcomers:
        title = f"### Re-ranked answer (stale): #{answer['trial']}, dev {answer['rerank_dev']:.4f}"
        advice = (
            f"; since then trial(s) {', '.join(f'#{n}' for n in newcomers)} finished in the"
            f" study's top {rerank['k']} and were never re-scored, so this answer may not be the"
            f" best: run `evolver-opt rerank --study-name {study.study_name} --top-k"
            f" {rerank['k']}` again."
        )
    else:
        title = f"### Re-ranked answer: #{answer['trial']}, dev {answer['rerank_dev']:.4f}"
        advice = f"; export it with `--trial {answer['trial']}`."
    lines = [
        "",
        title,
        "",
        scored + advice,
        "",
        "| trial | study dev | re-scored dev |",
        "|---|---|---|",
    ]
    for t in rows.values():
        mark = " **(answer)**" if t["trial"] == answer["trial"] else ""
        lines.append(f"| #{t['trial']}{mark} | {t['study_dev']:.4f} | {t['rerank_dev']:.4f} |")
    return lines


def study_note(study: optuna.Study, *, artifacts: Sequence[str] = ()) -> str:
    """The study's dashboard note (Markdown)."""
    config = study_config(study)
    sampler = study.user_attrs.get(ATTR_SAMPLER) or {}
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    lines = [f"## {study.study_name}", ""]
    if config:
        lines += [
            (
                f"Merge search over **{len(expert_names(config))} experts** of"
                f" `{base_of(config)}` at **{config.get('granularity')}** granularity"
                f" ({config.get('form')} form, coefficients in {config.get('bounds')}),"
                f" maximizing dev {config.get('metric')}."
            ),
            "",
            f"- **Experts**: {_fmt_list(expert_names(config))}",
            f"- **Dev sets** (selection): {_fmt_list(config.get('dev'))}"
            + (
                f" ({config['dev_per_split']} examples each)" if config.get("dev_per_split") else ""
            ),
            (
                f"- **Test sets** (reporting only): in-domain"
                f" {_fmt_list(config.get('test_in_domain'))}; out-of-domain"
                f" {_fmt_list(config.get('test_out_of_domain'))}"
            ),
            f"- **Start points** (enqueued): each expert alone, {_fmt_list(config.get('seed_merges'))}",
            f"- **Racing**: {'on' if config.get('racing') else 'off'}",
            _pruner_line(config),
            _precision_line(study.user_attrs.get(ATTR_PRECISION)),
        ]
    elif study.user_attrs.get(ATTR_PROBLEM):
        direction = study.direction.name.lower()
        lines += [f"Problem: {study.user_attrs[ATTR_PROBLEM]} ({direction}).", ""]
    else:
        lines += ["A study without an evolver-opt config (made outside `evolver-opt run`).", ""]
    if sampler:
        options = sampler.get("options") or {}
        settings = ", ".join(f"{k}={v}" for k, v in options.items() if v is not None)
        lines.append(
            f"- **Sampler**: `{sampler.get('name')}` (seed {sampler.get('seed')})"
            + (f": {settings}" if settings else "")
        )
    lines.append(
        f"- **Trials**: {len(trials)} ({', '.join(f'{n} {k}' for k, n in counts.items() if n)})"
    )
    if config:
        lines += ["", "Trial user attributes: `dev:<split>` per-domain dev scores, `raced`,"]
        lines += ["`race_lost` (an offspring PRUNED by racing), `pruned` (by the pruner),"]
        lines += ["`merge_s`, `eval_s`, `examples_seen`, `dev_logprob` (secondary score)."]
    lines += [""]
    recipe = best_recipe(study)
    if recipe is None:
        lines += ["No finished trial yet."]
    else:
        what = "dev" if config else "value"
        lines += [f"### Best trial: #{recipe['trial']}, {what} {recipe['dev_score']:.4f}", ""]
        if recipe["dev_scores"]:
            lines += [
                "Per-domain dev: "
                + ", ".join(f"`{k}` {v:.4f}" for k, v in recipe["dev_scores"].items()),
                "",
            ]
        lines += ["Coefficients (expert x group):", ""] + _recipe_table(recipe)
    lines += _rerank_lines(study, study.user_attrs.get(ATTR_RERANK))
    if artifacts:
        lines += ["", "### Artifacts", "", *[f"- `{a}`" for a in artifacts]]
    lines += ["", "_Written by evolver-opt; rewritten after each run or compare._"]
    return "\n".join(lines) + "\n"


# Optuna's artifact ids are uuid4 strings; the metadata attribute's key ends with the same id.
_ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def stored_artifacts(study: optuna.Study) -> dict[str, dict[str, str]]:
    """The study's artifact metadata by attribute key, each ``{"artifact_id", "filename"}``
    checked: an entry that is not JSON, names no file, or whose id is not the uuid its key
    ends with (a path such as ``../../victim.txt``) is left out with a warning, never used."""
    out = {}
    for key, value in study._storage.get_study_system_attrs(study._study_id).items():
        if not key.startswith(ARTIFACT_PREFIX) or not isinstance(value, str):
            continue  # a deleted artifact's attribute holds JSON null
        problem = _artifact_problem(key, value)
        if problem is None:
            meta = json.loads(value)
            out[key] = {"artifact_id": meta["artifact_id"], "filename": meta["filename"]}
        else:
            warnings.warn(
                f"study {study.study_name!r}: study system attribute {key} = {preview(value)} "
                f"is ignored ({problem}); the study was changed outside Optuna",
                UserWarning,
                stacklevel=2,
            )
    return out


def _artifact_problem(key: str, value: str) -> str | None:
    """Why artifact metadata ``key = value`` cannot be trusted, or None."""
    try:
        meta = json.loads(value)
    except ValueError:
        return "not JSON"
    if not isinstance(meta, dict):
        return "not an object"
    artifact_id, filename = meta.get("artifact_id"), meta.get("filename")
    if not isinstance(artifact_id, str) or not _ARTIFACT_ID.fullmatch(artifact_id):
        return "its artifact_id is not an Optuna artifact id"
    if key != ARTIFACT_PREFIX + artifact_id:
        return "its artifact_id is not the one its key names"
    if not isinstance(filename, str) or not filename:
        return "it names no file"
    return None


def _remove_artifacts_named(study: optuna.Study, store: Any, filenames: set[str]) -> None:
    """Delete earlier artifacts with these file names (as optuna-dashboard's delete does)."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    storage, study_id = study._storage, study._study_id
    for key, meta in stored_artifacts(study).items():
        if meta["filename"] in filenames:
            with contextlib.suppress(ArtifactNotFound):  # a file already gone is fine
                store.remove(meta["artifact_id"])
            storage.set_study_system_attr(study_id, key, json.dumps(None))


def annotate_study(
    study: optuna.Study, *, artifacts: Path, files: Sequence[Path] = ()
) -> list[str]:
    """Write ``study``'s note and upload its best recipe and ``files`` as study artifacts into
    the file-system store at ``artifacts``; returns the uploaded file names."""
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"cannot upload missing report files {missing}")
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(str(artifacts))
        with tempfile.TemporaryDirectory() as tmp:
            uploads = [Path(f) for f in files]
            recipe = best_recipe(study)
            if recipe is not None:
                path = Path(tmp) / "best_recipe.json"
                path.write_text(json.dumps(recipe, indent=1))
                uploads.insert(0, path)
            names = [p.name for p in uploads]
            _remove_artifacts_named(study, store, set(names))
            for path in uploads:
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    except OSError as exc:
        raise StorageError(
            f"cannot write the artifacts of study {study.study_name!r} to {artifacts}: "
            f"{exc.strerror or exc} (its trials are saved in the storage)"
        ) from None
    optuna_dashboard.save_note(study, study_note(study, artifacts=names))
    return names


def refresh_note(study: optuna.Study) -> None:
    """Rewrite ``study``'s note, listing the artifacts it already has (none uploaded)."""
    import optuna_dashboard

    names = [meta["filename"] for meta in stored_artifacts(study).values()]
    optuna_dashboard.save_note(study, study_note(study, artifacts=names))


def safe_filename(name: str) -> str:
    """``name`` with anything but letters, digits, '.', '_' and '-' replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
