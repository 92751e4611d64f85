"""transformers' "Loading weights" / "Writing model shards" bars stay out of our output
(issue 29, item 4)."""

from __future__ import annotations

import pytest

from evolver_opt.runtime.quiet import transformers_bars_off


@pytest.fixture
def bars_on():
    """transformers' bars on (their default), as they were afterwards."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield hf_logging
    if not was_on:
        hf_logging.disable_progress_bar()


def test_the_switch_is_off_inside_and_as_found_after(bars_on):
    with transformers_bars_off():
        assert not bars_on.is_progress_bar_enabled()
    assert bars_on.is_progress_bar_enabled()
    bars_on.disable_progress_bar()  # a user's own choice is kept
    with transformers_bars_off():
        pass
    assert not bars_on.is_progress_bar_enabled()


def test_loading_an_expert_draws_no_bar(bars_on, tiny_world, capfd):
    from evolver_opt.zoo import load_expert

    capfd.readouterr()
    load_expert(tiny_world["experts"]["vader-tweets"])
    assert "Loading weights" not in capfd.readouterr().err


def test_saving_inside_the_switch_draws_no_bar(bars_on, tiny_world, tmp_path, capfd):
    from evolver_opt.zoo import load_expert

    model, _ = load_expert(tiny_world["experts"]["vader-tweets"])
    capfd.readouterr()
    model.save_pretrained(tmp_path / "loud", safe_serialization=True)
    assert "Writing model shards" in capfd.readouterr().err  # what the switch is for
    with transformers_bars_off():
        model.save_pretrained(tmp_path / "quiet", safe_serialization=True)
    assert "Writing model shards" not in capfd.readouterr().err
