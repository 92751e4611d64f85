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
"""

from __future__ import annotations

import warnings

import optuna

from evolver_opt.errors import ConfigError
from evolver_opt.study.sampler_names import SAMPLER_NAMES

# Optuna's CmaEsSampler (name -> use_separable_cma): it unpickles its state from trial system
# attributes, so anyone who can write the database runs code here. Opt-in, with a warning.
UNSAFE_CMAES = {"optuna-cmaes-unsafe-pickle": False, "optuna-cmaes-sep-unsafe-pickle": True}
_warned_unsafe = False
EVOLVER_PLUS = {"mutation": "pbest", "adapt": "jde"}


def make_sampler(
    name: str,
    *,
    seed: int | None,
    x0: dict[str, float] | None = None,
    budget: int | None = None,
    evolver_options: dict | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``; an unknown name lists the valid ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)  # CmaEsSampler's x0/sigma0 (Optuna >= 4.9)
        if name in ("evolver", "evolver-plus"):
            from evolver_opt import EvolverSampler

            options = dict(evolver_options or {})
            if name == "evolver-plus":
                options.update(EVOLVER_PLUS)
            return EvolverSampler(seed=seed, **options)
        if name in ("cmaes", "cmaes-sep"):
            from evolver_opt.integrations.cma import ReplayCmaEsSampler

            # cmaes-sep: separable (diagonal) CMA-ES for hundreds of coefficients. sigma0 is in
            # the search space mapped onto [0, 1]^D, as Optuna's CmaEsSampler.
            return ReplayCmaEsSampler(
                x0=x0, sigma0=0.3, seed=seed, warn_independent_sampling=False,
                separable=name == "cmaes-sep",
            )  # fmt: skip
        if name in UNSAFE_CMAES:
            _warn_unsafe(name)
            # Optuna's CmaEsSampler: pickle.loads of trial system attributes (see the docstring)
            return optuna.samplers.CmaEsSampler(
                x0=x0, sigma0=0.3, seed=seed, warn_independent_sampling=False,
                use_separable_cma=UNSAFE_CMAES[name],
            )  # fmt: skip
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        if name.startswith("ng:") and len(name) > 3:
            from evolver_opt import NevergradSampler  # imports nevergrad (seconds): only here

            return NevergradSampler(name[3:], seed=seed, budget=budget)
        element = _element_sampler(name, seed, evolver_options or {})
        if element is not None:
            return element
    raise ConfigError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLER_NAMES)}")


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
    from evolver_opt.study.element import resolve_sampler

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
    from evolver_opt.study.element import parse_element_sampler

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
    from evolver_opt.study.config import EvolverSettings

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
