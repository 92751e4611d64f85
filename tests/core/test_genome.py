"""The coefficient layout: names <-> matrix <-> flat vector, validation, start points."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from evolver_opt.core import genome as genome_module
from evolver_opt.core.genome import MAX_PARAM_NAME, Genome
from evolver_opt.errors import ConfigError

# group names with dots, as layer and tensor granularity make them
G = Genome(("ft0", "ft1", "ft2"), ("embeddings", "bert.encoder.layer.0", "head"))


def test_names_are_model_major_and_split_back():
    assert G.param_names[:4] == (
        "w.ft0.embeddings",
        "w.ft0.bert.encoder.layer.0",
        "w.ft0.head",
        "w.ft1.embeddings",
    )
    assert len(G.param_names) == 9 and G.shape == (3, 3)
    for name in G.param_names:
        model, group = G.split(name)
        assert G.param_name(model, group) == name
    assert G.split("w.ft2.bert.encoder.layer.0") == ("ft2", "bert.encoder.layer.0")


def test_split_prefers_the_longest_known_model_with_dots():
    g = Genome(("a", "a.b"), ("x.y",))
    assert g.split("w.a.b.x.y") == ("a.b", "x.y")
    assert g.split("w.a.x.y") == ("a", "x.y")
    assert g.split("w.other.x.y") == ("other", "x.y")  # unknown model: up to the first dot
    with pytest.raises(ConfigError, match="'lr' is not a merge coefficient"):
        g.split("lr")
    with pytest.raises(ConfigError, match="'w.lonely' has no group"):
        g.split("w.lonely")


def test_matrix_params_and_flat_vector_round_trip():
    c = np.random.default_rng(0).uniform(size=G.shape)
    params = G.params(c)
    assert list(params) == list(G.param_names)
    assert params["w.ft1.bert.encoder.layer.0"] == c[1, 1]
    np.testing.assert_array_equal(G.matrix(params), c)
    np.testing.assert_array_equal(G.matrix(c.ravel()), c)
    np.testing.assert_array_equal(G.matrix(c.tolist()), c)
    assert G.matrix(params | {"lr": 3.0}).dtype == np.float64  # other names are ignored


def test_validation_names_the_bad_value():
    with pytest.raises(ConfigError, match=r"shape \(2, 3\), expected \(3, 3\)"):
        G.matrix(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match=r"shape \(8,\).*flat vector of 9"):
        G.matrix(np.zeros(8))
    params = G.params(G.uniform())
    del params["w.ft1.head"]
    with pytest.raises(ConfigError, match=r"miss \['w.ft1.head'\]"):
        G.matrix(params)
    with pytest.raises(ConfigError, match=r"unknown names \['w.ft9.head'\]"):
        G.matrix(G.params(G.uniform()) | {"w.ft9.head": 1.0})
    bad = G.uniform()
    bad[2, 1] = np.inf
    with pytest.raises(ConfigError, match=r"finite; \['w.ft2.bert.encoder.layer.0'\]"):
        G.matrix(bad)
    with pytest.raises(ConfigError, match=r"model 'nope' is not one of \['ft0'"):
        G.one_hot("nope")
    with pytest.raises(ConfigError, match=r"model index 3 is outside \[0, 3\)"):
        G.one_hot(3)


def test_a_name_too_long_for_optuna_fails_at_construction():
    Genome(("m",), ("g" * (MAX_PARAM_NAME - 4),))  # "w.m." + group: exactly the limit
    with pytest.raises(ConfigError, match=f"{MAX_PARAM_NAME + 1} characters"):
        Genome(("m",), ("g" * (MAX_PARAM_NAME - 3),))


def test_average_form_divides_each_group_by_its_sum():
    c = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [0.0, 0.0, 4.0]])
    out = G.normalized(c, "average")
    np.testing.assert_allclose(out[:, 0], [0.25, 0.75, 0.0])
    np.testing.assert_allclose(out[:, 1], [1 / 3] * 3)  # an all-zero group: the plain average
    np.testing.assert_allclose(out[:, 2], [0.25, 0.25, 0.5])
    np.testing.assert_array_equal(G.normalized(G.params(c), "task_arithmetic"), c)
    np.testing.assert_array_equal(c[:, 1], 0.0)  # the input is not modified


def test_one_hot_uniform_and_start_points():
    np.testing.assert_array_equal(G.one_hot("ft1"), G.one_hot(1))
    assert G.one_hot(1).sum(axis=0).tolist() == [1.0] * 3 and G.one_hot(1)[1].all()
    points = G.start_points()
    assert len(points) == 4
    for i, point in enumerate(points[:3]):
        np.testing.assert_array_equal(G.matrix(point), G.one_hot(i))
    assert set(points[3].values()) == {1 / 3}


def test_from_params_reads_a_stored_trial():
    params = {"lr": 0.1, "w.b.layer.0": 2.0, "w.a.layer.0": 1.0, "w.b.head": 3.0}
    g = Genome.from_params(params)
    assert g == Genome(("b", "a"), ("layer.0", "head"))  # order of appearance
    ordered = Genome.from_params(params, ["a", "b", "absent"])
    assert ordered.models == ("a", "b") and ordered.groups == ("layer.0", "head")
    assert Genome.from_params(params, ["a"]).models == ("a",)  # models not named: left out
    assert Genome.from_params({"lr": 0.1}).shape == (0, 0)


def test_docstring_example_runs():
    result = doctest.testmod(genome_module)
    assert result.attempted >= 3 and result.failed == 0
