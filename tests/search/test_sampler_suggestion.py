"""A sampler typo suggests the closest name (issue 29, item 4)."""

from __future__ import annotations

from importlib import resources

import pytest
from click.testing import CliRunner

from evolver_opt.errors import ConfigError
from evolver_opt.search.samplers import closest_sampler, factory_of


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("evolvr", "evolver"),
        ("Evolver", "evolver"),
        ("cmaes_sep", "cmaes-sep"),
        ("randm", "random"),
        ("ng-NGOpt", "ng:NGOpt"),
        ("ng_NGOpt", "ng:NGOpt"),
        ("evolver-merge:ties", "evolver-merger:ties"),
        ("evolver-merger-regmean", "evolver-merger:regmean"),
        ("evolver-elements", "evolver-element"),
        ("xyzzy", None),
    ],
)
def test_closest_sampler(typed, meant):
    assert closest_sampler(typed) == meant


def test_the_unknown_name_message_suggests_and_still_lists():
    with pytest.raises(ConfigError, match=r"unknown sampler 'evolvr'; did you mean evolver\? \("):
        factory_of("evolvr")
    with pytest.raises(ConfigError) as raised:
        factory_of("xyzzy")
    assert "did you mean" not in str(raised.value) and "cmaes-sep" in str(raised.value)


def test_run_suggests_before_any_work(tmp_path):
    from evolver_opt.cli import main

    with resources.as_file(resources.files("evolver_opt.experiments") / "demo.toml") as study:
        result = CliRunner().invoke(
            main,
            ["run", str(study), "--sampler", "evolvr", "--storage", f"sqlite:///{tmp_path}/s.db"],
        )
    assert result.exit_code == 1
    assert "unknown sampler 'evolvr'; did you mean evolver?" in result.output
