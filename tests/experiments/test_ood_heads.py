"""Out-of-domain splits with separate heads are scored by the head of their own labels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from evolver_opt.errors import ConfigError
from evolver_opt.experiments.rows import heads_for_splits


def _engine(spaces: dict[str, tuple[str, ...]], merged: bool = False):
    models = [
        SimpleNamespace(config=SimpleNamespace(id2label=dict(enumerate(labels))))
        for labels in spaces.values()
    ]
    return SimpleNamespace(
        heads_merged=merged, model_names=list(spaces), checkpoints=SimpleNamespace(models=models)
    )


def _split(domain: str, labels: tuple[str, ...]):
    return SimpleNamespace(domain=domain, key=f"{domain}/test", label_names=labels)


SPACES = {
    "trec": ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"),
    "sms-spam": ("ham", "spam"),
    "vader-movies": ("negative", "positive"),
}


def test_each_split_gets_its_expert_or_the_expert_of_its_label_space():
    engine = _engine(SPACES)
    splits = [
        _split("trec", SPACES["trec"]),
        _split("uci-imdb", ("negative", "positive")),
        _split("vader-movies", ("negative", "positive")),
    ]
    assert heads_for_splits(engine, splits) == {
        "trec/test": "trec",
        "uci-imdb/test": "vader-movies",  # not the first expert's (trec's) head
        "vader-movies/test": "vader-movies",
    }


def test_a_split_whose_labels_no_head_has_is_refused_naming_it():
    engine = _engine(SPACES)
    with pytest.raises(ConfigError, match=r"'bbc-news/test' has labels \['business'"):
        heads_for_splits(engine, [_split("bbc-news", ("business", "tech"))])


def test_merged_heads_need_no_mapping():
    assert heads_for_splits(_engine(SPACES, merged=True), [_split("x", ("a",))]) == {}
