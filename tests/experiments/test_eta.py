"""A compare's estimate counts every row's work, per kind (issue 29, item 4)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from evolver_opt.experiments.eta import CompareEta, compare_eta


def test_nothing_is_promised_before_a_rate_is_measured():
    eta = CompareEta({"trial": 10, "reference": 3})
    assert eta.message() is None
    eta.record("trial", 10, 20.0)
    assert eta.message() == (
        "compare: 3 reference rows left (2.0 s/trial); the reference rows: timed once one is done"
    )  # a reference row is a trial and an answer: the answer's rate is not known yet
    eta = CompareEta({"trial": 10, "reference": 3})
    eta.record("trial", 5, 10.0)
    assert eta.message() == (
        "compare: 5 trials, 3 reference rows left: about 10 s (2.0 s/trial); plus the reference "
        "rows: timed once one is done"
    )


def test_rows_are_estimated_from_the_kinds_they_are_made_of():
    eta = CompareEta({"trial": 40, "answer": 4, "reference": 7, "point": 10, "tuned": 2})
    eta.record("trial", 20, 40.0)  # 2 s per trial
    eta.record("answer", 2, 20.0)  # 10 s per answer
    # 20 x 2 + 2 x 10 + 7 references x 12 + 10 points x 2 + 2 tuned x 10 = 184 s
    assert eta.message().startswith(
        "compare: 20 trials, 2 test scorings of the studies' answers, 7 reference rows, "
        "10 tuned grid points, 2 tuned rows left: about 3 min (2.0 s/trial, 10.0 s/test scoring)"
    )
    eta.record("reference", 1, 3.0)  # measured: its own rate from now on
    assert "6 reference rows" in eta.message() and "3.0 s/reference row" in eta.message()


def test_nothing_left_says_nothing():
    eta = CompareEta({"trial": 1})
    eta.record("trial", 1, 1.0)
    assert eta.message() is None
    with pytest.raises(ValueError, match="unknown kinds of work \\['rows'\\]"):
        CompareEta({"rows": 1})


def test_compare_counts_the_tuned_rows_and_names_the_statistics():
    from evolver_opt.experiments.baselines import data_methods_list, default_grids

    plain = compare_eta(
        SimpleNamespace(form=None), studies=2, n_trials=5, references=7, tuned=False
    )
    assert plain.left == {"trial": 10, "answer": 2, "reference": 7, "point": 0, "tuned": 0}
    tuned = compare_eta(SimpleNamespace(form=None), studies=1, n_trials=5, references=7, tuned=True)
    grids, data = default_grids(), data_methods_list()
    assert tuned.left["point"] == sum(map(len, grids.values())) + len(data)
    assert tuned.left["tuned"] == len(grids) + len(data)
    assert tuned.note == f"plus the statistics of {', '.join(data)} unless cached"


def test_a_form_studys_own_tuned_row_is_counted_only_while_it_is_to_do():
    form = SimpleNamespace(form="iso_cts")
    ahead = compare_eta(form, studies=1, n_trials=5, references=0, tuned=False)
    assert ahead.left["point"] == 8 and ahead.left["tuned"] == 1
    done = compare_eta(form, studies=1, n_trials=5, references=0, tuned=False, own_form=False)
    assert done.left == {"trial": 5, "answer": 1, "reference": 0, "point": 0, "tuned": 0}


def test_compare_says_it_is_setting_up_before_the_setup(study_env, tmp_path, monkeypatch):
    """Something is printed before minutes of setup (experts, tokenized dev splits)."""
    from evolver_opt.cli import main
    from evolver_opt.search import objective
    from tests.tiny_world import write_study

    def stop(config):
        raise SystemExit("setup reached")

    monkeypatch.setattr(objective, "build_setup", stop)
    study = write_study(tmp_path / "s.toml", study_env["world"])
    result = CliRunner().invoke(
        main, ["compare", str(study), "--samplers", "random", "--storage", study_env["storage"]]
    )
    assert result.output.startswith("setting up tiny: 3 experts, layer granularity; loading")
