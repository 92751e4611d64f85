"""Every shipped study file loads, and its experts come from a zoo recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolver_opt.study.config import load_config, parse_config

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
