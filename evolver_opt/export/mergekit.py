"""A mergekit configuration (YAML) for the merges mergekit can express, refused otherwise.

mergekit (https://github.com/arcee-ai/mergekit) reads a YAML file naming a method, a base
model, the input models and their parameters; a parameter may differ per tensor through a list
of ``{filter, value}`` conditions (the first whose ``filter`` is a substring of the tensor's name
wins). What maps, exactly (checked against mergekit 0.1.5 in tests/merge/test_mergekit.py):

* every coefficient merge (a study's trial, ``average``, ``task_arithmetic`` and any other
  method whose result is a coefficient array) is ``theta_base + sum_i c[i, g] * tau_i``:
  mergekit's ``task_arithmetic`` with ``normalize: false`` and one ``weight`` per (model,
  group), the groups (model, layer, tensor) written as name filters. Where the base checkpoint
  lacks tensors the models have (a base without a task head) and every group's coefficients
  sum to one, mergekit's ``linear`` (no base) gives the same weighted average;
* ``ties`` with equal model weights: mergekit's ``ties`` (TIES's normalized disjoint mean, our
  ``lambda * w`` as its ``lambda``). evolver-opt keeps ``round(density * n)`` entries of a
  tensor of ``n``, mergekit ``int(density * n)``: tensors where these differ get their own
  ``density`` so that both keep the same entries.

Everything else is refused with the reason: the methods that are neither linear nor TIES
(DARE's and DARE-TIES's random masks are drawn differently, RegMean, Fisher, TSV-M, ... need
statistics or decompositions mergekit does not compute), weight-space (element) evolution, and
task heads of different shapes kept separate (mergekit merges every tensor of every input model).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods import get_method, list_methods
from evolver_opt.merge.methods._base import check_density, keep_count, model_weights

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine

MERGEKIT_FILE = "mergekit_config.yml"
FORM_PREFIX = "form:"  # a study's coefficients over a method's parts (search/forms.py)
COEFFICIENTS = "coefficients"  # the method name of a searched (study) coefficient merge
_SUM_TOLERANCE = 1e-9
_REASONS = {
    "dare": "DARE drops task-vector entries at random with evolver-opt's own seeded masks; "
    "mergekit's dare_linear draws other masks, so it would be the same method but not this model",
    "dare_ties": "DARE-TIES drops task-vector entries at random with evolver-opt's own seeded "
    "masks, then takes TIES's disjoint mean; mergekit's dare_ties draws other masks (and sums the "
    "agreeing entries unless normalize is set), so it would not be this model",
    "element": "the weights were evolved scalar by scalar (granularity 'element'): there are no "
    "per-model coefficients to write",
}


def refusal_reason(method: str) -> str:
    """Why ``method`` has no mergekit form (methods that have one: coefficient merges, ties)."""
    if method in _REASONS:
        return _REASONS[method]
    if method.startswith(FORM_PREFIX):
        return (
            f"its coefficients weigh {method[len(FORM_PREFIX) :]!r}'s per-task parts (a study "
            "form), which mergekit has no method for"
        )
    if method in list_methods():
        chosen = get_method(method)
        kind = getattr(chosen, "data", None) or (
            "examples" if "examples" in chosen.params else None
        )
        data = f" and needs {kind} of each expert's own training data" if kind else ""
        return (
            f"it is neither a linear combination of the models' weights nor TIES{data}; "
            "mergekit's linear, task_arithmetic and ties methods cannot reproduce it"
        )
    return f"it is not a method evolver-opt knows (methods: {list_methods()})"


def mergekit_config(
    engine: MergeEngine,
    method: str = COEFFICIENTS,
    params: Mapping[str, Any] | None = None,
    coefficients: Any = None,
    *,
    head: str | None = None,
) -> dict[str, Any]:
    """The mergekit configuration that reproduces this merge, or a :class:`ConfigError` saying
    why mergekit cannot.

    ``method``/``params``: the static method and its parameters (``coefficients`` for a study's
    searched coefficients); ``coefficients``: the ``(n_models, n_groups)`` array of a linear
    merge; ``head``: with separate heads, the task whose head the configuration keeps."""
    params = dict(params or {})
    linear = method == COEFFICIENTS or (method in list_methods() and get_method(method).linear)
    if not linear and method != "ties":
        raise ConfigError(f"mergekit cannot express method {method!r}: {refusal_reason(method)}")
    head_index = _head_index(engine, head, method)
    missing = _base_mismatch(engine)
    if linear:
        if coefficients is None:
            raise ConfigError(f"method {method!r}: the coefficients are needed for mergekit")
        return _coefficient_config(engine, np.asarray(coefficients, float), head_index, missing)
    if missing:
        raise ConfigError(f"mergekit cannot express this TIES merge: {missing}")
    return _ties_config(engine, params)


def to_yaml(config: Mapping[str, Any], *, note: str = "") -> str:
    """The configuration as mergekit's YAML, with a header saying where it came from."""
    from evolver_opt._version import __version__

    head = f"# mergekit configuration written by evolver-opt {__version__}"
    lines = [head, *(f"# {line}" for line in note.splitlines() if line)]
    lines.append("# run: mergekit-yaml THIS_FILE OUTPUT_DIR")
    text = yaml.dump(dict(config), Dumper=_PlainDumper, sort_keys=False)
    return "\n".join(lines) + "\n" + text


class _PlainDumper(yaml.SafeDumper):
    """Safe YAML without anchors: a density list shared by every model is written out each
    time, as a person would write it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# -- checks --------------------------------------------------------------------------------
def _head_index(engine: MergeEngine, head: str | None, method: str) -> int | None:
    """With separate heads: the kept head's model index (all heads must share one shape)."""
    if engine.heads_merged:
        return None
    if method == "ties":
        raise ConfigError(
            "mergekit cannot express a TIES merge with separate task heads: it would TIES-merge "
            "the heads too"
        )
    shapes = {
        name: tuple(tuple(t.shape) for t in tensors.values())
        for name, tensors in engine.task_heads.items()
    }
    if len(set(shapes.values())) > 1:
        sizes = ", ".join(f"{n} {s[0][0] if s and s[0] else '?'}" for n, s in shapes.items())
        raise ConfigError(
            "mergekit cannot express separate task heads of different shapes (labels per head: "
            f"{sizes}): it merges every tensor of every input model, so it cannot keep one "
            "model's head. Export with --no-mergekit-yaml, or merge models of one label space"
        )
    return engine.genome.model_index(head or engine.active_head or engine.model_names[0])


def _base_mismatch(engine: MergeEngine) -> str:
    """Why the base checkpoint cannot be mergekit's ``base_model`` ('' when it can)."""
    base = engine.checkpoints.base
    base_arch = getattr(base.config, "architectures", None)
    model_arch = getattr(engine.checkpoints.models[0].config, "architectures", None)
    if base_arch != model_arch:
        return (
            f"the base {base.path} is a {base_arch} and the models are {model_arch}: mergekit "
            "needs one architecture with the same tensor names in every input model"
        )
    keys = engine.plan.keys[0]
    names = [*engine.layout.names, *([] if engine.heads_merged else engine.plan.head_names)]
    absent = [n for n in names if keys.get(n) != n]
    if absent:
        return (
            f"the base {base.path} lacks {len(absent)} tensor(s) the models have (e.g. "
            f"{absent[0]!r}); evolver-opt counts them as zero, mergekit needs them in its base_model"
        )
    return ""


# -- coefficient merges --------------------------------------------------------------------
def _coefficient_config(
    engine: MergeEngine, c: np.ndarray, head_index: int | None, missing: str
) -> dict[str, Any]:
    if c.shape != (engine.n_models, engine.n_groups):
        raise ConfigError(
            f"coefficients of shape {c.shape}, expected {(engine.n_models, engine.n_groups)}"
        )
    use_linear = bool(missing)
    if use_linear and not np.all(np.abs(c.sum(axis=0) - 1.0) < _SUM_TOLERANCE):
        raise ConfigError(
            f"mergekit cannot express these coefficients: {missing}, and without a base only "
            "coefficients summing to one in every group (a weighted average) map to mergekit's "
            "linear method"
        )
    models = []
    for i, path in enumerate(m.path for m in engine.checkpoints.models):
        groups: dict[str, Any] = dict(_tensor_groups(engine))
        by_tensor = {name: float(c[i, g]) for name, g in groups.items()}
        if head_index is not None:
            by_tensor.update({n: float(i == head_index) for n in engine.plan.head_names})
            groups.update({n: "head" for n in engine.plan.head_names})
        # a tensor the layout does not name is equal in every model (a buffer): any weights
        # summing to one (linear) or none (task arithmetic: the base) leave it as it is
        fallback = 1.0 / engine.n_models if use_linear else 0.0
        weight = _per_tensor(by_tensor, kinds=groups, fallback=fallback)
        models.append({"model": str(path), "parameters": {"weight": weight}})
    config: dict[str, Any] = {"merge_method": "linear" if use_linear else "task_arithmetic"}
    if not use_linear:
        config["base_model"] = str(engine.checkpoints.base.path)
    config["models"] = models
    config["parameters"] = {"normalize": False}
    config["dtype"] = "float32"
    out = str(engine.model_dtype).removeprefix("torch.")
    if out != "float32":
        config["out_dtype"] = out
    return config


def _tensor_groups(engine: MergeEngine) -> dict[str, int]:
    """Merged tensor name -> its coefficient group."""
    starts = [s for s, _ in engine.layout.group_spans]
    return {
        name: int(np.searchsorted(starts, off, side="right")) - 1
        for name, off in zip(engine.layout.names, engine.layout.offsets)
    }


def _per_tensor(
    values: Mapping[str, float],
    rest: float | None = None,
    kinds: Mapping[str, Any] | None = None,
    fallback: float | None = None,
) -> Any:
    """A mergekit parameter giving each tensor of ``values`` its value: a scalar when all are
    equal, else ``{filter, value}`` conditions checked by resolving every name as mergekit does
    (the first filter that is a substring of the name wins; none: ``rest``, a final condition
    without filter, or no value when None). ``fallback``: with ``rest`` None, the value of a
    final condition for tensors mergekit sees and ``values`` does not name (buffers, equal in
    every model), which the check does not use.

    Tensors of one kind (``kinds``: e.g. the coefficient group; default: the value) share one
    filter, their longest common name prefix; where that catches other tensors, exact names
    (longest first) are tried, then exact names only."""
    distinct = set(values.values())
    if len(distinct) == 1 and rest in (None, *distinct):
        return distinct.pop()
    if not distinct:
        return rest
    kinds = kinds or {n: v for n, v in values.items()}
    members: dict[Any, list[str]] = {}
    for name, v in values.items():
        if v != rest:
            members.setdefault(kinds[name], []).append(name)
    tries = [
        [(_common_prefix(names), values[names[0]]) for names in members.values()],
        [],
        [(n, v) for n, v in values.items() if v != rest],
    ]
    for conditions in tries:
        if not conditions:  # the second try: the first plus exact names for what it got wrong
            wrong = _misresolved(tries[0], values, rest)
            conditions = [(n, values[n]) for n in wrong if values[n] != rest] + tries[0]
        conditions = sorted((fv for fv in conditions if fv[0]), key=lambda fv: -len(fv[0]))
        if not _misresolved(conditions, values, rest):
            break
    else:  # pragma: no cover - a name is found first by itself when names are longest first
        raise ConfigError("no mergekit name filters resolve every tensor to its value")
    out: list[dict[str, Any]] = [{"filter": f, "value": v} for f, v in conditions]
    last = rest if rest is not None else fallback
    if last is not None:
        out.append({"value": last})
    return out


def _misresolved(
    conditions: Sequence[tuple[str, float]], values: Mapping[str, float], rest: float | None
) -> list[str]:
    """Tensors whose first matching filter (mergekit's rule) gives another value."""
    return [
        name
        for name, v in values.items()
        if next((cv for f, cv in conditions if f in name), rest) != v
    ]


def _common_prefix(names: Sequence[str]) -> str:
    prefix = os.path.commonprefix(list(names))
    if len(names) > 1 and "." in prefix:  # cut to a whole name part: "layer.1." not "layer.1"
        prefix = prefix[: prefix.rindex(".") + 1]
    return prefix


# -- TIES ----------------------------------------------------------------------------------
def _ties_config(engine: MergeEngine, params: Mapping[str, Any]) -> dict[str, Any]:
    defaults = get_method("ties").defaults()
    density = check_density(params.get("density", defaults["density"]))
    lambda_ = float(params.get("lambda_", params.get("lambda", defaults["lambda_"])))
    w = model_weights(params.get("weights"), engine.n_models, normalize=False)
    if not np.all(w == w[0]):
        raise ConfigError(
            f"mergekit cannot express TIES with unequal model weights {w.tolist()}: it divides "
            "the agreeing entries by their summed weights, evolver-opt by their count"
        )
    densities = {}
    for name, shape in zip(engine.layout.names, engine.layout.shapes):
        n = int(np.prod(shape, dtype=np.int64))
        k = keep_count(n, density)
        densities[name] = density if _mergekit_keeps(n, density) == k else _density_for(n, k)
    spec = _per_tensor(densities, density)
    models = [
        {"model": str(m.path), "parameters": {"weight": 1.0, "density": spec}}
        for m in engine.checkpoints.models
    ]
    return {
        "merge_method": "ties",
        "base_model": str(engine.checkpoints.base.path),
        "models": models,
        "parameters": {"normalize": True, "lambda": lambda_ * float(w[0])},
        "dtype": "float32",
    }


def _mergekit_keeps(n: int, density: float) -> int:
    """How many entries mergekit's magnitude trim keeps of a tensor of ``n`` at ``density``."""
    return n if density >= 1 else max(1, int(density * n))


def _density_for(n: int, k: int) -> float:
    """A density at which mergekit keeps exactly ``k`` of ``n`` entries."""
    if k >= n:
        return 1.0
    d = (k + 0.5) / n
    assert _mergekit_keeps(n, d) == k, (n, k, d)
    return d
