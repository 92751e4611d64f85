"""transformers' own progress bars off where we load and save models.

transformers 5 draws a "Loading weights" bar on every ``from_pretrained`` and a "Writing model
shards" bar on every ``save_pretrained``; inside a zoo build, a setup or an export they cut
into our own progress lines. :func:`transformers_bars_off` turns them off for one block and
leaves the switch as it found it (a library user's own setting is kept).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transformers_bars_off() -> Iterator[None]:
    """No transformers (or Hugging Face Hub) progress bar inside the block."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
