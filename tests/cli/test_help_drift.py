"""The help says what the commands do (issue 29, item 4): default names and paths as they are,
and tables that stay aligned."""

from __future__ import annotations

import re
from importlib import resources

import click
import optuna
import pytest
from click.testing import CliRunner

from evolver_opt.cli import main
from evolver_opt.cli._options import SEARCH_LABEL


def _option(path: list[str], name: str) -> click.Option:
    command: click.Command = main
    ctx = click.Context(main)
    for part in path:
        command = command.get_command(ctx, part)  # type: ignore[union-attr]
    (option,) = [p for p in command.params if p.name == name]
    assert isinstance(option, click.Option)
    return option


def _help(path: list[str], name: str) -> str:
    option = _option(path, name)
    record = option.get_help_record(click.Context(click.Command(path[-1])))
    assert record is not None
    return record[1]


def _template_regex(template: str) -> re.Pattern[str]:
    """``<name>-<granularity>[-<form>][-dev<N>]-<sampler>-seed<seed>`` as a regex."""
    pattern = re.escape(template)
    for slot, value in (
        ("<name>", "[a-z0-9-]+?"),
        ("<granularity>", "(model|layer|tensor|element)"),
        ("<form>", r"[a-z_]+(?:\+[a-z_]+)*"),  # a blend joins its methods with "+"
        ("<N>", "[0-9]+"),
        ("<sampler>", "[a-z0-9-]+"),
        ("<seed>", "[0-9]+"),
    ):
        pattern = pattern.replace(re.escape(slot), value)
    pattern = pattern.replace(r"\[", "(?:").replace(r"\]", ")?")
    return re.compile(f"^{pattern}$")


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"dev_per_split": 32},
        {"form": "tsv_m"},
        {"form": "tsv_m", "dev_per_split": 8},
        {"form": "iso_cts+wudi"},
    ],
)
def test_run_help_names_the_default_study_name_as_it_is_made(changes):
    from evolver_opt.search.config import load_config, override_config
    from evolver_opt.search.runner import default_study_name

    help_text = _option(["run"], "study_name").help or ""
    template = f"{SEARCH_LABEL}-<sampler>-seed<seed>"
    assert template in help_text
    with resources.as_file(resources.files("evolver_opt.experiments") / "demo.toml") as path:
        config = override_config(load_config(path), changes, source="test")
    name = default_study_name(config, "evolver", 0)
    assert _template_regex(template).match(name), (name, template)
    if "dev_per_split" in changes or config.dev_per_split:
        assert f"-dev{config.dev_per_split}-" in name


def test_compare_and_baselines_help_name_their_default_paths():
    assert f"runs/compare-{SEARCH_LABEL})" in (_option(["compare"], "out").help or "")
    assert f"runs/baselines-{SEARCH_LABEL}.json" in (_option(["baselines"], "out").help or "")


@pytest.mark.parametrize("command", ["prepare", "list"])
def test_data_help_names_the_real_default_path(command, monkeypatch, tmp_path):
    monkeypatch.delenv("EVOLVER_OPT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    shown = _help(["data", command], "data_dir")
    assert f"(default: {tmp_path}/.cache/evolver-opt/data;" in shown
    monkeypatch.setenv("EVOLVER_OPT_CACHE", str(tmp_path / "c"))
    assert f"$EVOLVER_OPT_CACHE/data, now {tmp_path}/c/data" in _help(["data", command], "data_dir")


def test_studies_aligns_long_names(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    long_name = "multitask-8-layer-tsv_m-dev200-evolver-merger-regmean-seed12345-resumed"
    for name in (long_name, "short"):
        study = optuna.create_study(study_name=name, storage=url)
        study.set_user_attr("evolver_opt:sampler", {"name": "ng:NGOpt", "seed": 0, "options": {}})
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    lines = CliRunner().invoke(main, ["studies", "--storage", url]).output.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["study", long_name, "short"]
    starts = {line.index(line.split()[1], len(line.split()[0])) for line in lines}
    ends = {len(line) for line in lines}
    assert len(starts) == 1 and len(ends) == 1, "\n".join(lines)  # every column lines up
