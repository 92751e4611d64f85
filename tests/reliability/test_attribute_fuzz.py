"""Storage attributes fuzz: random and adversarial values in every attribute the project
reads (``evolver:*``, ``evolver_opt:*``, ``peak_rss_mb`` and Optuna's ``artifacts:*``), then a
resume and the end of a run (peak memory, note, artifacts).

For each (attribute, value): nothing is executed (pickles that would run a shell command are
among the values), the resume either stops with one :class:`EvolverError` that names the
problem or takes a documented fallback, and every trial finished before the tampering is still
there with its state and value.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import shutil
import sqlite3
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from evolver_opt import EvolverError, EvolverSampler, open_storage
from evolver_opt.experiments.memory import record_peak
from evolver_opt.experiments.rerank import top_trials
from evolver_opt.integrations.element_sampler import ElementEvolverSampler
from evolver_opt.reports.notes import annotate_study, refresh_note
from evolver_opt.runtime.worker import WorkerLoop
from evolver_opt.search.attributes import (
    ATTR_PRECISION,
    ATTR_PROBLEM,
    ATTR_RERANK,
    PrecisionCheck,
)
from evolver_opt.search.runner import claim_study
from tests.reliability._synthetic_worker import DIM, objective_for

optuna.logging.set_verbosity(optuna.logging.ERROR)

# Attributes whose damage is survivable by design, each with its documented fallback:
FALLBACKS = {
    "evolver:search_space": "a checkpoint only: ignored with a warning, recomputed from trials",
    "evolver_opt:config": "informational (notes, reports): the hash decides a resume",
    "evolver_opt:identity": "informational (the differences listed on refusal): the hash decides",
    "evolver_opt:problem": "informational (the note's problem line)",
    "peak_rss_mb": "informational (reports): ignored with a warning, replaced by this run's",
    "artifacts:*": "ignored with a warning (never used to delete); the note lists the others",
    "evolver_opt:owner": "not trusted unless whole and of its own trial: the heartbeat decides",
}
ARTIFACTS = "artifacts:*"  # the attribute Optuna keeps per uploaded artifact, keyed by its id


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(7 if depth < 2 else 5)
    if kind == 0:
        return rng.choice([0, -1, 1, 999, 10**9, -(10**12), 2**63])
    if kind == 1:
        return rng.choice([0.5, -1e308, 1e308, 1e-300, float("nan"), float("inf")])
    if kind == 2:
        return rng.choice(["", "x", "offspring", "init", "\x00", "é" * 50])
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return []
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(1, 4))]
    keys = ["size", "n_enqueued", "index", "slot", "role", "trial", "name", "seed", "below", "x"]
    return {k: _random_json(rng, depth + 1) for k in rng.sample(keys, rng.randrange(1, 5))}


def _payloads(marker: Path, seed: int) -> list[str]:
    raw = pickle.dumps(_Exploit(str(marker)))
    rng = random.Random(seed)
    adversarial = [
        "{not json",
        "",
        json.dumps(base64.b64encode(raw).decode()),
        json.dumps(raw.decode("latin-1")),
        raw.hex(),  # what Optuna's CmaEsSampler stores (as a JSON string it would unpickle)
        json.dumps(raw.hex()),
    ]
    return adversarial + [json.dumps(_random_json(rng)) for _ in range(6)]


def _coefficient_study(url: str) -> None:
    """An evolver-opt study over the synthetic problem: 25 trials (a search-space checkpoint,
    lineage, population, config, identity, sampler, hash), then what the end of a run and
    ``rerank`` add (peak memory, precision, problem, a re-ranking, the note's artifacts)."""
    study = _open_coefficient(url)
    WorkerLoop(study, objective_for(), n_trials=25).run()
    study.set_user_attr(ATTR_PRECISION, PrecisionCheck("auto", "fp32", "fuzz", 0.99).as_json())
    study.set_user_attr(ATTR_PROBLEM, "fuzz")
    top = top_trials(study, 3)
    rerank = {
        "k": 3, "dev_per_split": None, "study_dev_per_split": 8, "metric": "accuracy",
        "precision": "fp32", "answer": top[-1].number,
        "trials": [{"trial": t.number, "study_dev": t.value, "rerank_dev": 0.5} for t in top],
    }  # fmt: skip
    study.set_user_attr(ATTR_RERANK, rerank)
    _end_of_run(study, Path(url.removeprefix("sqlite:///")))


class _Peak:
    mib, scope = 123.0, "block"


def _end_of_run(study: optuna.Study, db: Path) -> None:
    """What ``run`` does after its trials: peak memory, the note and its artifacts."""
    record_peak(study, _Peak())
    annotate_study(study, artifacts=db.with_name(db.stem + "-artifacts"))
    refresh_note(study)


def _claim_fuzz(
    url: str,
    sampler: optuna.samplers.BaseSampler,
    sampler_name: str,
    identity: dict,
    points: list[dict[str, float]],
    **options,
) -> optuna.Study:
    """Create or resume the study ``fuzz`` on ``url``: ``identity`` is also its config, the
    sampler is stored as ``sampler_name`` with seed 0, ``points`` are its start points."""
    return claim_study(
        "fuzz",
        open_storage(url, heartbeat_interval=None),
        sampler,
        identity=identity,
        sampler_json={"name": sampler_name, "seed": 0, "options": {}},
        config_json=identity,
        initial_points=points,
        **options,
    )


def _open_coefficient(url: str) -> optuna.Study:
    points = [{f"w{j}": float(j % 4 == i) for j in range(DIM)} for i in range(4)]
    identity = {"problem": "fuzz", "dim": DIM}
    return _claim_fuzz(
        url, EvolverSampler(seed=0), "evolver", identity, points, direction="minimize"
    )


def _element_objective(trial: optuna.Trial) -> float:
    """Init trials score their coefficients; offspring a value derived from their number."""
    if "fixed_params" in trial.study._storage.get_trial_system_attrs(trial._trial_id):
        return sum(trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(3))
    return 1.0 + 0.01 * (trial.number % 7)


def _element_study(url: str) -> None:
    study = _open_element(url)
    WorkerLoop(study, _element_objective, n_trials=12).run()


def _open_element(url: str) -> optuna.Study:
    points = [{f"w{j}": float(i == j) for j in range(3)} for i in range(3)]
    identity = {"problem": "fuzz-element"}
    return _claim_fuzz(url, ElementEvolverSampler(seed=0), "evolver-element", identity, points)


WORLDS = {"coefficient": (_coefficient_study, _open_coefficient, objective_for()),
          "element": (_element_study, _open_element, _element_objective)}  # fmt: skip

# (world, table, key): every attribute either sampler or the study layer writes
TARGETS = [
    ("coefficient", "study_user_attributes", "evolver_opt:config"),
    ("coefficient", "study_user_attributes", "evolver_opt:identity"),
    ("coefficient", "study_user_attributes", "evolver_opt:config_hash"),
    ("coefficient", "study_user_attributes", "evolver_opt:sampler"),
    ("coefficient", "study_system_attributes", "evolver:population"),
    ("coefficient", "study_system_attributes", "evolver:search_space"),
    ("coefficient", "trial_system_attributes", "evolver:lineage"),
    ("coefficient", "trial_system_attributes", "evolver_opt:owner"),
    ("coefficient", "study_user_attributes", "evolver_opt:precision"),
    ("coefficient", "study_user_attributes", "evolver_opt:problem"),
    ("coefficient", "study_user_attributes", "evolver_opt:rerank"),
    ("coefficient", "study_user_attributes", "peak_rss_mb"),
    ("coefficient", "study_system_attributes", ARTIFACTS),
    ("element", "study_system_attributes", "evolver:element_study"),
    ("element", "trial_system_attributes", "evolver:element"),
]


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fuzz-templates")
    out = {}
    for world, (build, _open, _objective) in WORLDS.items():
        out[world] = folder / f"{world}.db"
        build(f"sqlite:///{out[world]}")
    return out


def _artifacts_of(db: Path) -> Path:
    """The artifact folder beside a SQLite file (``evolver_opt.reports.notes.artifact_dir``)."""
    return db.with_name(db.stem + "-artifacts")


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database in WAL mode (the file alone may miss commits)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def _resolve(path: Path, table: str, key: str) -> str:
    """``key``, or for ``artifacts:*`` the key of the study's first live artifact."""
    if key != ARTIFACTS:
        return key
    with sqlite3.connect(path) as conn:
        (found,) = conn.execute(
            f"SELECT key FROM {table} WHERE key LIKE 'artifacts:%' AND value_json != 'null' "
            "ORDER BY key LIMIT 1"
        ).fetchone()
    return found


def _special(key: str, original: object, victim: Path) -> list[str]:
    """Values of the right shape that point somewhere they must not (issue 27, item 10)."""
    if key == ARTIFACTS and isinstance(original, dict):
        traversal = os.path.relpath(victim, Path.cwd())
        return [
            json.dumps({**original, "artifact_id": "../../victim.txt"}),
            json.dumps({**original, "artifact_id": traversal}),
            json.dumps({**original, "artifact_id": str(victim)}),
            json.dumps({**original, "filename": 7}),
        ]
    if key == "evolver_opt:rerank" and isinstance(original, dict):
        ghost = {"trial": 99_999, "study_dev": 0.5, "rerank_dev": 0.9}
        first = original["trials"][0]
        return [
            json.dumps({**original, "trials": [*original["trials"], ghost], "answer": 99_999}),
            json.dumps({**original, "trials": [{**first, "study_dev": -7.0}]}),
        ]
    if key == "peak_rss_mb":
        return [json.dumps("lots"), json.dumps({"mib": "lots"}), json.dumps({"mib": -1})]
    return []


def _stored(path: Path, table: str, key: str) -> object:
    """The stored value that :func:`_tamper` replaces."""
    where = "key = ?" + (_TRIAL_7 if table.startswith("trial_") else "")
    with sqlite3.connect(path) as conn:
        (text,) = conn.execute(f"SELECT value_json FROM {table} WHERE {where}", (key,)).fetchone()
    return json.loads(text)


_TRIAL_7 = " AND trial_id = (SELECT trial_id FROM trials WHERE number = 7)"


def _wrong_values(original: object) -> list[str]:
    """Valid JSON of the right shape with one wrong value: each integer field of the stored
    object set to -1 and to 2**62 (past every field's domain: indices, slots, trial numbers,
    mask seeds); a string replaced by another of the same form. A value inside its domain (a
    different but possible mask seed) cannot be told from the original and is not tried."""
    if isinstance(original, str):
        return [json.dumps("0" * len(original))]
    if not isinstance(original, dict):
        return []
    out = []
    for field, value in original.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out += [json.dumps({**original, field: wrong}) for wrong in (2**62, -1)]
    return out


def _finished(url: str) -> list[tuple]:
    """(number, state, value) of every finished trial, read with plain SQL (no JSON parsed)."""
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v "
                "ON v.trial_id = t.trial_id WHERE t.state IN ('COMPLETE', 'PRUNED', 'FAIL') "
                "ORDER BY t.number"
            )
        ).fetchall()
    engine.dispose()
    return [tuple(r) for r in rows]


def _tamper(url: str, table: str, key: str, text: str) -> int:
    engine = sqlalchemy.create_engine(url)
    where = "key = :k" + (_TRIAL_7 if table.startswith("trial_") else "")  # a middle trial
    with engine.begin() as conn:
        changed = conn.execute(
            sqlalchemy.text(f"UPDATE {table} SET value_json = :v WHERE {where}"),
            {"v": text, "k": key},
        ).rowcount
    engine.dispose()
    return changed


@pytest.mark.parametrize(("world", "table", "key"), TARGETS, ids=[t[2] for t in TARGETS])
def test_tampered_attribute_is_refused_or_falls_back_and_loses_nothing(
    templates, tmp_path, world, table, key
):
    _build, reopen, objective = WORLDS[world]
    outcomes = []
    pattern, key = key, _resolve(templates[world], table, key)
    original = _stored(templates[world], table, key)
    victim = tmp_path / "victim.txt"
    payloads = _payloads(tmp_path / "pwned", seed=len(key)) + _wrong_values(original)
    payloads += _special(pattern, original, victim)
    for n, text in enumerate(payloads):
        path = tmp_path / f"case{n}.db"
        _copy_database(templates[world], path)
        if _artifacts_of(templates[world]).is_dir():
            shutil.copytree(_artifacts_of(templates[world]), _artifacts_of(path))
        victim.write_text("keep me")
        url = f"sqlite:///{path}"
        assert _tamper(url, table, key, text) == 1, f"{key} is not stored in the {world} study"
        before = _finished(url)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study = reopen(url)
                WorkerLoop(study, objective, n_trials=len(before) + 3).run()
                if world == "coefficient":
                    _end_of_run(study, path)
            outcome = "ran"
        except EvolverError as exc:
            outcome = "refused"
            message = str(exc)
            named = key in message or "another configuration" in message
            assert named, f"{key}={text[:40]!r}: the error does not name it: {message}"
        except Exception as exc:  # noqa: BLE001 - the point: no other kind of error
            pytest.fail(
                f"{key}={text[:40]!r}: {type(exc).__name__} instead of a clear error: {exc}"
            )
        assert not (tmp_path / "pwned").exists(), f"{key}={text[:40]!r} executed code"
        assert victim.exists(), f"{key}={text[:40]!r} deleted a file outside the artifact store"
        after = {r[0]: r for r in _finished(url)}
        assert all(after.get(r[0]) == r for r in before), f"{key}={text[:40]!r} lost a trial"
        if outcome == "ran":
            assert pattern in FALLBACKS, f"{key}={text[:40]!r} was used without a word"
        outcomes.append(outcome)
    if pattern not in FALLBACKS:
        assert set(outcomes) == {"refused"}
