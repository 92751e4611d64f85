"""Every shipped study file loads, and its experts come from a zoo recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolver_opt.search.config import load_config, parse_config

STUDIES = sorted((Path(__file__).parents[2] / "studies").glob("*.toml"))


@pytest.mark.parametrize(
    "path", [p for p in STUDIES if "[study]" in p.read_text()], ids=lambda p: p.name
)
def test_shipped_study_loads(path):
    config = load_config(path)
    experts = config.expert_specs()
    assert len(experts) >= 2
    assert set(config.dev) <= set(config.test_in_domain) | set(config.test_out_of_domain) | set(
        config.dev
    )
    assert parse_config(config.model_dump(mode="json")).identity_hash() == config.identity_hash()


def test_identity_changes_with_search_fields_only():
    config = load_config(Path(__file__).parents[2] / "studies" / "sentiment-domains.toml")
    data = config.model_dump(mode="json")
    assert parse_config({**data, "n_trials": 7}).identity_hash() == config.identity_hash()
    assert parse_config({**data, "granularity": "layer"}).identity_hash() != config.identity_hash()
    assert parse_config({**data, "evolver": {"F": 0.3}}).identity_hash() != config.identity_hash()


def test_dev_per_split_is_part_of_the_search_identity_only_when_set():
    config = load_config(Path(__file__).parents[2] / "studies" / "sentiment-domains.toml")
    data = config.model_dump(mode="json")
    assert "dev_per_split" not in config.identity()
    small = parse_config({**data, "dev_per_split": 50})
    assert small.identity()["dev_per_split"] == 50
    assert small.identity_hash() != config.identity_hash()
    # the test sample only shortens reporting: the same search
    assert parse_config({**data, "test_per_split": 50}).identity_hash() == config.identity_hash()


@pytest.mark.parametrize("field", ["dev_per_split", "test_per_split"])
def test_per_split_sizes_below_one_are_refused_naming_the_field(field):
    from evolver_opt.errors import ConfigError

    config = load_config(Path(__file__).parents[2] / "studies" / "sentiment-domains.toml")
    with pytest.raises(
        ConfigError, match=rf"study\.{field}: .*greater than or equal to 1 \(got 0\)"
    ):
        parse_config({**config.model_dump(mode="json"), field: 0})
