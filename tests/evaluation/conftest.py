"""Fixtures: a tiny tokenizer, tiny random BERT classifiers and synthetic splits."""

from __future__ import annotations

import pytest

from tests.evaluation.tiny import random_split, tiny_bert, tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model():
    return tiny_bert(seed=0)


@pytest.fixture
def dev_split():
    return random_split(150, seed=1)
