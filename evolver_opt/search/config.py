"""``StudyConfig``: one merge search, read from a study TOML (a frozen pydantic model).

A study file has a ``[study]`` table (and optionally the ``[zoo]`` recipe its experts come from)::

    [study]
    name = "sentiment-domains"
    granularity = "tensor"            # model | layer | tensor | element (weight space)
    bounds = [0.0, 1.0]
    form = "task_arithmetic"          # or "average" (normalized per group), or a merge method
                                      # with parts (tsv_m, iso_cts, wudi, ...), or a blend of
                                      # them ("iso_cts+wudi"): search/forms.py
    seed_merges = ["average"]         # static merges enqueued beside each expert alone
    dev = ["vader-tweets", "vader-movies"]
    test_in_domain = ["vader-tweets", "vader-movies"]
    test_out_of_domain = ["uci-imdb"]
    n_trials = 150

    [study.evaluation]
    batch_size = 64
    device = "cpu"

    [study.evolver]                   # EvolverSampler settings
    F = 0.5
    CR = 0.5

Bad values fail at load with the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from evolver_opt.core.config import HYPERPARAMETERS, RANGE, EvolverConfig
from evolver_opt.errors import ConfigError
from evolver_opt.zoo import ZooRecipe

# The fields that define a search: resuming a study with any of them changed is refused.
IDENTITY_FIELDS = (
    "base",
    "experts",
    "granularity",
    "bounds",
    "form",
    "form_options",
    "heads",
    "dev",
    "dev_per_split",
    "metric",
    "evolver",
    "seed_merges",
    "racing",
    "evaluation",
    "pruner",
)
# Evaluation settings that change a score are max_length, device and the resolved precision
# (batch size only changes speed). Fields added to the identity after studies were stored are
# left out while at their default, so those studies keep their hash.


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExpertSpec(_Frozen):
    """A fine-tuned model: a name (used in parameter names) and its directory."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    path: Path


class EvaluationSettings(_Frozen):
    """How trials are scored. ``precision``: ``fp32``, ``bf16`` or ``auto`` (bfloat16 where the
    hardware has it, checked against float32 on the start points; evaluation/precision.py)."""

    batch_size: int = Field(64, ge=1)
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")
    max_length: int = Field(128, ge=8)
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _bf16_alias(cls, data: Any) -> Any:
        """``bf16 = true/false`` (the older spelling) is ``precision = "bf16"/"fp32"``."""
        if isinstance(data, dict) and "bf16" in data:
            data = dict(data)
            flag = data.pop("bf16")
            if "precision" in data:
                raise ValueError("give precision or the older bf16, not both")
            if not isinstance(flag, bool):
                raise ValueError(f"bf16 must be true or false, got {flag!r}")
            data["precision"] = "bf16" if flag else "fp32"
        return data

    @property
    def resolved_precision(self) -> str:
        """``fp32`` or ``bf16``: ``auto`` decided for this machine and device."""
        from evolver_opt.evaluation.precision import resolve

        return resolve(self.precision, self.device)


class PrunerSettings(_Frozen):
    """Staged dev scoring with one of Optuna's pruners (``none``: one stage, no pruning).

    After each stage (a fraction of every dev split, tasks interleaved) the running score is
    ``trial.report``-ed with step = dev examples seen, and the pruner may stop the trial.
    Evolver's offspring race their parent exactly instead and are never pruned by it."""

    name: Literal["none", "median", "successive_halving", "patient"] = "none"
    stages: tuple[float, ...] = (0.25, 0.5, 1.0)
    options: dict[str, int | float] = {}  # keyword arguments of the Optuna pruner

    @field_validator("stages")
    @classmethod
    def _increasing(cls, stages: tuple[float, ...]) -> tuple[float, ...]:
        if not stages or stages[-1] != 1.0 or any(not 0 < s <= 1 for s in stages):
            raise ValueError(f"expected fractions in (0, 1] ending with 1.0, got {list(stages)}")
        if any(a >= b for a, b in itertools.pairwise(stages)):
            raise ValueError(f"expected increasing fractions, got {list(stages)}")
        return stages

    @model_validator(mode="after")
    def _builds(self) -> PrunerSettings:
        for key, value in self.options.items():
            _check_pruner_option(self.name, key, value)
        self.make()  # a bad option fails at load, naming it
        return self

    def make(self) -> Any:
        """The Optuna pruner (``NopPruner`` for ``none``)."""
        import warnings

        import optuna

        options = dict(self.options)
        try:
            if self.name == "none":
                if options:
                    raise ValueError("options need a pruner name")
                return optuna.pruners.NopPruner()
            if self.name == "median":
                return optuna.pruners.MedianPruner(**options)
            if self.name == "successive_halving":
                return optuna.pruners.SuccessiveHalvingPruner(**options)
            patience = int(options.pop("patience", 1))
            min_delta = float(options.pop("min_delta", 0.0))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.pruners.PatientPruner(
                    optuna.pruners.MedianPruner(**options), patience=patience, min_delta=min_delta
                )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"pruner {self.name!r} with options {self.options}: {exc}") from None


# Each pruner's options: name -> (integer?, lowest, highest). Counts and steps are capped at a
# million (a study never has more trials or dev examples); min_delta is a score difference.
_MEDIAN_OPTIONS: dict[str, tuple[bool, float, float]] = {
    "n_startup_trials": (True, 0, 10**6),
    "n_warmup_steps": (True, 0, 10**6),
    "interval_steps": (True, 1, 10**6),
    "n_min_trials": (True, 1, 10**6),
}
PRUNER_OPTIONS: dict[str, dict[str, tuple[bool, float, float]]] = {
    "none": {},
    "median": _MEDIAN_OPTIONS,
    "successive_halving": {
        "min_resource": (True, 1, 10**6),
        "reduction_factor": (True, 2, 10**6),
        "min_early_stopping_rate": (True, 0, 10**6),
        "bootstrap_count": (True, 0, 10**6),
    },
    "patient": {**_MEDIAN_OPTIONS, "patience": (True, 0, 10**6), "min_delta": (False, 0.0, 1.0)},
}


def _check_pruner_option(pruner: str, key: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``key = value`` is a known option of ``pruner`` in range
    (finite; an integer where the pruner counts)."""
    known = PRUNER_OPTIONS[pruner]
    if key not in known:
        allowed = sorted(known) or "none (no pruner)"
        raise ValueError(f"pruner {pruner!r}: unknown option {key!r}; expected one of {allowed}")
    integer, low, high = known[key]
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"pruner {pruner!r}: option {key} = {value!r} is not a finite number")
    if integer and not isinstance(value, int):
        raise ValueError(f"pruner {pruner!r}: option {key} = {value!r} must be an integer")
    if not low <= value <= high:
        raise ValueError(
            f"pruner {pruner!r}: option {key} = {value!r} is out of range; expected "
            f"{low} <= {key} <= {high}"
        )


MAX_POPULATION = 10_000


def _hyperparameter_fields() -> dict[str, Any]:
    """``EvolverConfig``'s fields as pydantic fields: its names, types, defaults and ranges."""
    hints = get_type_hints(EvolverConfig)
    return {
        f.name: (hints[f.name], Field(f.default, **f.metadata.get(RANGE, {})))
        for f in dataclasses.fields(EvolverConfig)
    }


_EvolverFields = create_model(
    "_EvolverFields",
    __base__=_Frozen,
    # Each slot costs at least one trial before evolution starts, and the samplers keep a
    # (slots x coefficients) array per trial asked: beyond this a study never leaves its start.
    population_size=(int | None, Field(None, ge=2, le=MAX_POPULATION)),
    **_hyperparameter_fields(),
    # Selection's tie-break between equal dev scores: the secondary score (mean log-probability
    # of the right label), or None (the earlier trial, the paper's greedy rule).
    tie_break=(Literal["dev_logprob"] | None, None),
)
# The fields the first studies stored; every field added since (and any hyperparameter added to
# EvolverConfig later) is left out at its default, so those studies keep their identity.
FIRST_STORED = ("population_size", "mutation", "F", "CR", "p_random", "n_generations",
                "bound_handling")  # fmt: skip


class EvolverSettings(_EvolverFields):
    """``[study.evolver]``: the keyword arguments of ``EvolverSampler``: ``population_size``,
    Evolver's hyperparameters (the fields of ``core.config.EvolverConfig``, declared there once,
    with its defaults and ranges) and ``tie_break``."""

    def stored(self) -> dict[str, Any]:
        """The settings as studies store them (a later field is left out at its default, so
        older studies keep their identity)."""
        data = self.model_dump(mode="json")
        defaults = EvolverSettings().model_dump(mode="json")
        return {k: v for k, v in data.items() if k in FIRST_STORED or v != defaults[k]}

    def config(self) -> EvolverConfig:
        """The hyperparameters as the samplers take them."""
        return EvolverConfig(**{name: getattr(self, name) for name in HYPERPARAMETERS})


class StudyConfig(_Frozen):
    """Everything that defines one merge search."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base: str | None = None  # an installed model package or a directory; default: the zoo's base
    experts: tuple[ExpertSpec, ...] = ()  # default: the zoo's expert per zoo domain
    zoo: ZooRecipe | None = None
    zoo_experts: tuple[str, ...] | None = None  # a subset of the zoo's domains (default: all)
    # "element": weight-space Evolver (evolver_opt.search.element); the engine's coefficient
    # layout (initial points, static merges) is then the "model" one.
    granularity: Literal["model", "layer", "tensor", "element"] = "model"
    bounds: tuple[float, float] = (0.0, 1.0)
    # What the coefficients weigh: the experts' task vectors ("task_arithmetic"; "average"
    # normalizes each group), a merge method's per-task parts, or a blend of methods' merges
    # ("iso_cts+wudi": per method and group; search/forms.py), with form_options the
    # method's parameters (e.g. common_fraction for iso_cts; a blend takes none).
    form: str = "task_arithmetic"
    form_options: dict[str, str | int | float | bool] = {}
    heads: Literal["auto", "merge", "separate"] = "auto"
    # Start points beside each expert alone (linear methods); a method form starts from its
    # own merge at every scale of its dev grid instead (seed_merges = [form], the default).
    seed_merges: tuple[str, ...] = ("average",)
    dev: tuple[str, ...] = Field(min_length=1)
    test_in_domain: tuple[str, ...] = ()
    test_out_of_domain: tuple[str, ...] = ()
    # A fixed, label-stratified sample of each split (default: all of it), for budgets where the
    # full dev set costs too much per trial; test_per_split only shortens reporting.
    dev_per_split: int | None = Field(None, ge=1)
    test_per_split: int | None = Field(None, ge=1)
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    racing: bool = True
    pruner: PrunerSettings = PrunerSettings()
    n_trials: int = Field(150, ge=1)
    evaluation: EvaluationSettings = EvaluationSettings()
    evolver: EvolverSettings = EvolverSettings()

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"expected finite numbers, got {list(bounds)}")
        if not bounds[0] < bounds[1]:
            raise ValueError(f"expected lower < upper, got {list(bounds)}")
        return bounds

    @model_validator(mode="before")
    @classmethod
    def _form_seeds(cls, data: Any) -> Any:
        """A method form's start points are its own merge: the default ``seed_merges``."""
        if isinstance(data, dict) and "seed_merges" not in data:
            form = data.get("form", "task_arithmetic")
            if isinstance(form, str) and form not in ("task_arithmetic", "average"):
                data = {**data, "seed_merges": [form]}
        return data

    @model_validator(mode="after")
    def _form_known(self) -> StudyConfig:
        from evolver_opt.search.forms import check_form

        check_form(self.form, self.seed_merges, dict(self.form_options))
        if self.form not in ("task_arithmetic", "average") and self.granularity == "element":
            raise ValueError(
                f'granularity "element" evolves the experts\' weights; form {self.form!r} '
                "needs a coefficient granularity (model, layer or tensor)"
            )
        return self

    @model_validator(mode="after")
    def _experts_known(self) -> StudyConfig:
        if not self.experts and self.zoo is None:
            raise ValueError("give [study] experts = [{name=..., path=...}, ...] or a [zoo] table")
        if self.base is None and self.zoo is None:
            raise ValueError("give [study] base (a model package or directory) or a [zoo] table")
        if self.zoo_experts is not None:
            if self.zoo is None:
                raise ValueError("zoo_experts needs a [zoo] table")
            unknown = [d for d in self.zoo_experts if d not in self.zoo.domains]
            if unknown:
                raise ValueError(
                    f"zoo_experts {unknown} are not [zoo] domains {list(self.zoo.domains)}"
                )
        if self.granularity == "element" and self.evaluation.precision == "bf16":
            raise ValueError(
                'granularity "element" keeps its weight population in float32: use '
                'evaluation.precision = "fp32" or "auto"'
            )
        names = [e.name for e in self.expert_specs()]
        if len(set(names)) != len(names):
            raise ValueError(f"expert names must be unique, got {names}")
        if len(names) < 2:
            raise ValueError(f"a merge needs at least 2 experts, got {names}")
        return self

    def expert_specs(self, zoo_root: Path | None = None) -> tuple[ExpertSpec, ...]:
        """The experts to merge: explicit ones, else the zoo's (one per zoo domain)."""
        if self.experts:
            return self.experts
        assert self.zoo is not None
        domains = self.zoo_experts or self.zoo.domains
        return tuple(ExpertSpec(name=d, path=self.zoo.expert_dir(d, zoo_root)) for d in domains)

    @property
    def search_label(self) -> str:
        """``<name>-<granularity>[-<form>][-dev<N>]``: the stem of study names and compare
        folders (the form only when it is a merge method's)."""
        dev = f"-dev{self.dev_per_split}" if self.dev_per_split else ""
        form = "" if self.form in ("task_arithmetic", "average") else f"-{self.form}"
        return f"{self.name}-{self.granularity}{form}{dev}"

    @property
    def precision(self) -> str:
        """The resolved evaluation precision, ``fp32`` or ``bf16`` (``element``: ``fp32``)."""
        if self.granularity == "element":
            return "fp32"
        return self.evaluation.resolved_precision

    @property
    def base_name(self) -> str:
        return self.base if self.base is not None else self.zoo.base  # type: ignore[union-attr]

    def identity(self) -> dict[str, Any]:
        """The JSON fields that define the search (compared on resume)."""
        data = self.model_dump(mode="json")
        data["base"] = self.base_name
        data["evolver"] = self.evolver.stored()
        data["experts"] = [e.model_dump(mode="json") for e in self.expert_specs()]
        data["evaluation"] = {
            "max_length": self.evaluation.max_length,
            "bf16": self.precision == "bf16",  # resolved: what the scores are computed in
            "device": self.evaluation.device,
        }
        defaults = StudyConfig.model_fields
        later = {  # fields added after studies were stored: left out at their default
            "dev_per_split": None,
            "seed_merges": list(defaults["seed_merges"].default),
            "form_options": {},
            "racing": defaults["racing"].default,
            "evaluation": {"max_length": 128, "bf16": False, "device": "cpu"},
            "pruner": PrunerSettings().model_dump(mode="json"),
        }
        return {k: data[k] for k in IDENTITY_FIELDS if k not in later or data[k] != later[k]}

    def identity_hash(self) -> str:
        return identity_hash(self.identity())


def identity_hash(identity: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of ``identity``'s canonical JSON (stored on the study)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | Path) -> StudyConfig:
    """Read ``path``'s ``[study]`` (and ``[zoo]``) tables; errors name field, value, allowed."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read study file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{path}: arrays or tables nested too deeply to read; a study file needs a few levels"
        ) from None
    if "study" not in data:
        raise ConfigError(f"{path}: no [study] table (found tables: {sorted(data) or 'none'})")
    table = dict(data["study"])
    if "zoo" in data:
        table["zoo"] = data["zoo"]
    return parse_config(table, source=str(path))


def parse_config(table: dict[str, Any], source: str = "config") -> StudyConfig:
    try:
        config = StudyConfig.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from None
    _check_domains(config, source)
    return config


def override_config(config: StudyConfig, changes: dict[str, Any], source: str) -> StudyConfig:
    """``config`` with top-level ``changes`` (command-line overrides), validated like a file."""
    if not changes:
        return config
    data = config.model_dump(mode="json")
    if changes.get("form", config.form) != config.form and "seed_merges" not in changes:
        del data["seed_merges"]  # the new form's own start points (see _form_seeds)
    return parse_config({**data, **changes}, source=source)


def with_precision(config: StudyConfig, precision: str | None) -> StudyConfig:
    """``config`` with ``evaluation.precision`` replaced (``None``: unchanged)."""
    if precision is None:
        return config
    evaluation = {**config.evaluation.model_dump(mode="json"), "precision": precision}
    return override_config(config, {"evaluation": evaluation}, source="--precision")


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "study"
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"study.{where}: {error['msg']}{shown}"


def _check_domains(config: StudyConfig, source: str) -> None:
    from evolver_opt.data import DOMAINS

    for field in ("dev", "test_in_domain", "test_out_of_domain"):
        for domain in getattr(config, field):
            if domain not in DOMAINS:
                raise ConfigError(
                    f"{source}: study.{field}: unknown domain {domain!r}; expected one of {sorted(DOMAINS)}"
                )


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two ``identity()`` dicts."""
    out = []
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            out.append(f"{key}: stored {stored.get(key)!r}, now {current.get(key)!r}")
    return out


def check_device(device: str) -> None:
    """Raise ``ConfigError`` unless torch can use ``device`` on this machine."""
    import torch

    kind, _, index = device.partition(":")
    if kind == "cpu":
        return
    backend = getattr(torch, kind, None)
    available = backend is not None and backend.is_available()
    count = backend.device_count() if available and hasattr(backend, "device_count") else 0
    if not available or (index and int(index) >= count):
        found = f"{count} {kind} device(s)" if available else f"no {kind} device"
        raise ConfigError(
            f"study.evaluation.device = {device!r}, but this machine has {found}; use "
            'device = "cpu" (or run where that device exists)'
        )


def engine_granularity(config: StudyConfig) -> str:
    """The merge engine's coefficient granularity (``element`` studies use ``model``)."""
    return "model" if config.granularity == "element" else config.granularity
