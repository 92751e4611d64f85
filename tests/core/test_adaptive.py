"""jDE self-adaptive F and CR (``adapt="jde"``): in the core, the Optuna sampler and storage."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from evolver_opt import EvolverSampler
from evolver_opt.core.config import JDE_F_RANGE, JDE_TAU, EvolverConfig
from evolver_opt.core.evolver import Evolver
from evolver_opt.core.operators import adapted
from evolver_opt.core.population import KEY_LINEAGE, Lineage
from evolver_opt.errors import ConfigError, StateError
from evolver_opt.search.config import EvolverSettings
from tests.core._helpers import assert_twins_agree, enqueued_study, run_sphere, sphere

optuna.logging.set_verbosity(optuna.logging.ERROR)
JDE = EvolverConfig(adapt="jde")
DIM = 6


def test_without_adaptation_the_configs_rates_are_used():
    config = EvolverConfig(F=0.3, CR=0.7)
    assert all(adapted(0, k, (0.9, 0.1), config) == (0.3, 0.7) for k in range(50))


def test_jde_inherits_or_redraws_each_rate_from_seed_and_index():
    parent = (0.42, 0.37)
    draws = [adapted(5, k, parent, JDE) for k in range(3000)]
    assert draws == [adapted(5, k, parent, JDE) for k in range(3000)]  # (seed, index) only
    assert draws != [adapted(6, k, parent, JDE) for k in range(3000)]
    new_f = [f for f, _ in draws if f != parent[0]]
    new_cr = [cr for _, cr in draws if cr != parent[1]]
    assert len(new_f) / 3000 == pytest.approx(JDE_TAU, abs=0.02)
    assert len(new_cr) / 3000 == pytest.approx(JDE_TAU, abs=0.02)
    both = sum(f != parent[0] and cr != parent[1] for f, cr in draws) / 3000
    assert both < JDE_TAU / 2  # independent redraws: about TAU**2 of the offspring redraw both
    assert JDE_F_RANGE[0] <= min(new_f) and max(new_f) <= JDE_F_RANGE[1]
    assert 0.0 <= min(new_cr) and max(new_cr) <= 1.0
    kept = [k for k, d in enumerate(draws) if d == parent]  # neither rate redrawn
    assert kept and all(adapted(5, k, None, JDE) == (JDE.F, JDE.CR) for k in kept)  # a start


def test_core_winner_keeps_its_rates_and_state_resumes_them_exactly():
    lower, upper = np.zeros(6), np.ones(6)
    opt = Evolver(lower, upper, initial_points=np.eye(6)[:4], seed=1, config=JDE)
    asked = []
    for _ in range(60):
        c = opt.ask()
        asked.append(c)
        opt.tell(c.index, sphere(c.x))
    rates = opt.state_dict()["params"]
    assert any(r is not None and r != [0.5, 0.5] for r in rates), rates  # redrawn rates won
    assert_twins_agree(opt, Evolver.from_state_dict(opt.state_dict()), 30)


def _study(sampler: EvolverSampler) -> optuna.Study:
    """The sphere study over six parameters."""
    return enqueued_study(sampler, DIM)


def _run(study: optuna.Study, n: int) -> None:
    """``n`` more trials of the six-parameter sphere."""
    run_sphere(study, n, DIM)


def test_sampler_stores_rates_inherits_them_from_the_parent_and_resumes_exactly():
    study = _study(EvolverSampler(seed=3, adapt="jde"))
    _run(study, 70)
    by_number = {t.number: t for t in study.trials}
    offspring = [
        t
        for t in study.trials
        if (Lineage.from_attrs(t.system_attrs) or 0)
        and Lineage.from_attrs(t.system_attrs).role == "offspring"
    ]
    assert len(offspring) > 50
    changed = 0
    for t in offspring:
        lineage = Lineage.from_attrs(t.system_attrs)
        parent = Lineage.from_attrs(by_number[lineage.parent_trial].system_attrs)
        inherited = None if parent is None or parent.F is None else (parent.F, parent.CR)
        k = lineage.index  # no random starts here: offspring index == fresh index
        assert (lineage.F, lineage.CR) == adapted(3, k, inherited, JDE)
        changed += inherited is not None and (lineage.F, lineage.CR) != inherited
    assert changed > 0  # some offspring descend from an adapted winner and redrew
    # a new process (a fresh sampler) continues with the stored rates
    resumed = _study(EvolverSampler(seed=3, adapt="jde"))
    _run(resumed, 40)
    resumed.sampler = EvolverSampler(seed=3, adapt="jde")
    _run(resumed, 30)
    assert [t.params for t in resumed.trials] == [t.params for t in study.trials[:70]]


def test_plain_evolver_lineage_is_unchanged_and_bad_stored_rates_are_refused():
    study = _study(EvolverSampler(seed=0))
    _run(study, 12)
    attrs = [t.system_attrs[KEY_LINEAGE] for t in study.trials if KEY_LINEAGE in t.system_attrs]
    assert attrs and all("F" not in a and "CR" not in a for a in attrs)
    good = {"trial": 9, "index": 1, "role": "offspring", "slot": 0, "F": 0.4, "CR": 0.2}
    assert Lineage.from_attrs({KEY_LINEAGE: good}).F == 0.4
    for bad in ({"F": 0.0}, {"F": 3.0}, {"CR": 1.5}, {"F": "0.4"}):
        with pytest.raises(StateError, match="malformed"):
            Lineage.from_attrs({KEY_LINEAGE: good | bad})


def test_settings_keep_old_identities_and_refuse_unknown_modes():
    assert "adapt" not in EvolverSettings().stored()
    assert EvolverSettings(adapt="jde").stored()["adapt"] == "jde"
    with pytest.raises(ValueError):
        EvolverSettings(adapt="shade")
    with pytest.raises(ConfigError, match="adapt='shade'"):
        EvolverConfig(adapt="shade")  # type: ignore[arg-type]
