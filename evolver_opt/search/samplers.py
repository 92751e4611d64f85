"""Samplers by name (``evolver``, ``evolver-plus``, ``cmaes``, ``random``, ``tpe``, ``ng:NAME``).

``evolver`` is the paper's algorithm (with the study's ``[study.evolver]`` options);
``evolver-plus`` is the best combination of the variants beyond the paper that the ablation
measured (``benchmarks/results/2026-12-01-evolver-ablation/``): JADE's current-to-pbest/1 with
an archive of replaced parents and jDE's self-adaptive F and CR (:data:`EVOLVER_PLUS`, which
override those keys of the study's options).

Every study starts from the same enqueued points (``Genome.start_points``: each model alone,
one-hot in every group, then the uniform average); the CMA-ES samplers also get ``x0`` at the
uniform average.

``cmaes`` / ``cmaes-sep`` are ``ReplayCmaEsSampler`` (JSON-only state). Optuna's own
``CmaEsSampler`` is only behind the names ``optuna-cmaes-unsafe-pickle`` /
``optuna-cmaes-sep-unsafe-pickle``: it stores its optimizer as pickles in trial attributes and
unpickles them from the database, so whoever can write the database runs code on the workers.
Use those names only on a database that only you can write.

Adding a sampler is one entry in :data:`SAMPLERS` (and its factory beside it): the commands'
``--help``, the unknown-name message and the checks all read that table. This module imports
nothing heavy at import time (the factories import their sampler), so ``--help`` stays fast.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from evolver_opt.errors import ConfigError

if TYPE_CHECKING:
    import optuna

# Optuna's CmaEsSampler (name -> use_separable_cma): it unpickles its state from trial system
# attributes, so anyone who can write the database runs code here. Opt-in, with a warning.
UNSAFE_CMAES = {"optuna-cmaes-unsafe-pickle": False, "optuna-cmaes-sep-unsafe-pickle": True}
_warned_unsafe = False
EVOLVER_PLUS = {"mutation": "pbest", "adapt": "jde"}

# factory(name, seed=, x0=, budget=, options=) -> the sampler; ``options`` is [study.evolver]
Factory = Callable[..., "optuna.samplers.BaseSampler"]


def _evolver(
    name: str, *, seed: int | None, options: dict, **_: Any
) -> optuna.samplers.BaseSampler:
    from evolver_opt.integrations.optuna_sampler import EvolverSampler

    options = dict(options)
    if name == "evolver-plus":
        options.update(EVOLVER_PLUS)
    return EvolverSampler(seed=seed, **options)


def _cmaes(
    name: str, *, seed: int | None, x0: dict | None, **_: Any
) -> optuna.samplers.BaseSampler:
    from evolver_opt.integrations.cma import ReplayCmaEsSampler

    # cmaes-sep: separable (diagonal) CMA-ES for hundreds of coefficients. sigma0 is in the
    # search space mapped onto [0, 1]^D, as Optuna's CmaEsSampler.
    return ReplayCmaEsSampler(
        x0=x0, sigma0=0.3, seed=seed, warn_independent_sampling=False,
        separable=name == "cmaes-sep",
    )  # fmt: skip


def _unsafe_cmaes(
    name: str, *, seed: int | None, x0: dict | None, **_: Any
) -> optuna.samplers.BaseSampler:
    import optuna

    _warn_unsafe(name)
    # Optuna's CmaEsSampler: pickle.loads of trial system attributes (see the docstring)
    return optuna.samplers.CmaEsSampler(
        x0=x0, sigma0=0.3, seed=seed, warn_independent_sampling=False,
        use_separable_cma=UNSAFE_CMAES[name],
    )  # fmt: skip


def _random(name: str, *, seed: int | None, **_: Any) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(name: str, *, seed: int | None, **_: Any) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _nevergrad(
    name: str, *, seed: int | None, budget: int | None, **_: Any
) -> optuna.samplers.BaseSampler:
    from evolver_opt.integrations.nevergrad import NevergradSampler  # nevergrad: seconds

    if name == "ng:":
        raise _unknown(name)
    return NevergradSampler(name[3:], seed=seed, budget=budget)


def _element(
    name: str, *, seed: int | None, options: dict, **_: Any
) -> optuna.samplers.BaseSampler:
    element = _element_sampler(name, seed, options)
    if element is None:
        raise _unknown(name)
    return element


# Every sampler by the name the commands list, in the order ``--help`` lists them. A name with
# ``:`` takes an argument: ``ng:NAME`` is every name that starts with ``ng:``.
SAMPLERS: dict[str, Factory] = {
    "evolver": _evolver,
    "evolver-plus": _evolver,
    "cmaes": _cmaes,
    "cmaes-sep": _cmaes,
    "random": _random,
    "tpe": _tpe,
    "ng:NAME": _nevergrad,
    "evolver-element": _element,
    "evolver-merger:METHOD": _element,
    "optuna-cmaes-unsafe-pickle": _unsafe_cmaes,
    "optuna-cmaes-sep-unsafe-pickle": _unsafe_cmaes,
}
SAMPLER_NAMES = tuple(SAMPLERS)
# The coefficient Evolver samplers (EvolverSampler): the paper's and the variants' preset.
COEFFICIENT_EVOLVERS = tuple(name for name, factory in SAMPLERS.items() if factory is _evolver)


def factory_of(name: str) -> Factory:
    """The factory of sampler ``name`` (an exact name, or a ``PREFIX:`` one); an unknown name
    raises :class:`ConfigError` listing the valid ones."""
    if ":" not in name:
        if name in SAMPLERS:
            return SAMPLERS[name]
        raise _unknown(name)
    prefix = name.partition(":")[0]
    for listed, factory in SAMPLERS.items():
        if ":" in listed and listed.partition(":")[0] == prefix:
            return factory
    raise _unknown(name)


def _unknown(name: str) -> ConfigError:
    guess = closest_sampler(name)
    hint = f"; did you mean {guess}?" if guess else ""
    return ConfigError(
        f"unknown sampler {name!r}{hint} (expected one of {', '.join(SAMPLER_NAMES)})"
    )


def closest_sampler(name: str) -> str | None:
    """The sampler name ``name`` most likely misspells (difflib), or None; a ``PREFIX:`` name
    keeps its own suffix (``ng-NGOpt`` and ``evolver-merge:ties`` -> ``ng:NGOpt``,
    ``evolver-merger:ties``)."""
    import difflib

    prefixes = [n.partition(":")[0] for n in SAMPLER_NAMES if ":" in n]
    head, sep, tail = name.partition(":")
    if sep:
        match = difflib.get_close_matches(head.lower(), prefixes, n=1)
        return f"{match[0]}:{tail}" if match else None
    for prefix in prefixes:  # the colon typed as another separator
        if name.lower().startswith(prefix) and name[len(prefix) : len(prefix) + 1] in "-_ .=/":
            rest = name[len(prefix) + 1 :]
            if rest:
                return f"{prefix}:{rest}"
    plain = [n for n in SAMPLER_NAMES if ":" not in n]
    match = difflib.get_close_matches(name.lower(), plain, n=1)
    return match[0] if match else None


def make_sampler(
    name: str,
    *,
    seed: int | None,
    x0: dict[str, float] | None = None,
    budget: int | None = None,
    evolver_options: dict | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``; an unknown name lists the valid ones."""
    import optuna

    factory = factory_of(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)  # CmaEsSampler's x0/sigma0 (Optuna >= 4.9)
        return factory(name, seed=seed, x0=x0, budget=budget, options=evolver_options or {})


def _warn_unsafe(name: str) -> None:
    global _warned_unsafe
    if _warned_unsafe:
        return
    _warned_unsafe = True
    warnings.warn(
        f"sampler {name!r} is Optuna's CmaEsSampler, which unpickles its state from trial "
        "attributes in the database (cma:optimizer:N): anyone who can write the database can "
        "run code on this worker. Use it only on a database that only you can write; "
        "'cmaes' / 'cmaes-sep' keep JSON-only state.",
        UserWarning,
        stacklevel=3,
    )


def check_sampler(
    name: str, *, granularity: str, budget: int | None, evolver_options: dict | None = None
) -> str:
    """The sampler to run for ``name`` at ``granularity``, built once and thrown away so that a
    typo or a bad option fails now, before any model is loaded or trained."""
    from evolver_opt.search.element import resolve_sampler

    resolved = resolve_sampler(granularity, name)
    sampler = make_sampler(resolved, seed=0, budget=budget, evolver_options=evolver_options)
    close = getattr(sampler, "close", None)
    if callable(close):
        close()
    return resolved


def _element_sampler(
    name: str, seed: int | None, options: dict
) -> optuna.samplers.BaseSampler | None:
    """Weight-space Evolver (``evolver-element``, ``evolver-merger:METHOD``) or None."""
    from evolver_opt.integrations.element_sampler import ElementEvolverSampler
    from evolver_opt.search.element import parse_element_sampler

    mode = parse_element_sampler(name)
    if mode is None:
        return None
    _refuse_ignored_settings(name, options)
    if not 0 < options.get("F", 0.5) <= 1:
        raise ConfigError(
            f"sampler {name!r} interpolates weights, so evolver.F must be in (0, 1]; "
            f"got F = {options['F']!r}"
        )
    if options.get("mutation", "interpolate") != "interpolate":
        raise ConfigError(
            f"sampler {name!r} evolves weights by interpolation only; "
            f"got evolver.mutation={options['mutation']!r}"
        )
    if options.get("adapt", "none") != "none":
        raise ConfigError(
            f"sampler {name!r} has no self-adaptive F and CR; got evolver.adapt={options['adapt']!r}"
        )
    return ElementEvolverSampler(
        mode=mode.mode, seed=seed, **{k: options[k] for k in ELEMENT_KEYS if k in options}
    )


# The [study.evolver] settings the weight-space samplers read; mutation and adapt are checked
# (interpolation only, no self-adaptation), every other one must stay at its default.
ELEMENT_KEYS = ("F", "CR", "p_random", "n_generations")


def _refuse_ignored_settings(name: str, options: dict) -> None:
    """Raise naming each ``[study.evolver]`` setting that sampler ``name`` would ignore."""
    from evolver_opt.search.config import EvolverSettings

    defaults = EvolverSettings().model_dump()
    checked = {*ELEMENT_KEYS, "mutation", "adapt"}
    ignored = {
        k: v for k, v in options.items() if k not in checked and v != defaults.get(k, object())
    }
    if ignored:
        listed = ", ".join(f"{k} = {v!r}" for k, v in sorted(ignored.items()))
        raise ConfigError(
            f"sampler {name!r} does not use [study.evolver] {listed} (its population is the "
            f"start points; it reads only {', '.join(ELEMENT_KEYS)}); remove "
            f"{'them' if len(ignored) > 1 else 'it'} or use a coefficient sampler"
        )
