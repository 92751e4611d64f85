"""The one working model: built empty (no init) in the target dtype, weights bound later."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.merge.checkpoints import CheckpointSet


def set_parameter(model: nn.Module, aliases: Sequence[str], param: nn.Parameter) -> None:
    """Install ``param`` under every tied name."""
    for alias in aliases:
        owner, _, attr = alias.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, param)


def _no_init() -> contextlib.AbstractContextManager:
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Construct modules in ``dtype`` like ``from_pretrained(dtype=...)`` does."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_working_model(
    ckpts: CheckpointSet, auto_class: Any, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """An empty model of the fine-tuned models' architecture (weights come later)."""
    import transformers

    # its own copy: use_head rewrites the working model's labels, which must not become the
    # first expert's (its CheckpointSet config is where use_head reads that expert's labels)
    config = copy.deepcopy(ckpts.models[0].config)
    cls = auto_class
    if isinstance(cls, str):
        cls = getattr(transformers, cls, None)
        if cls is None:
            raise ConfigError(f"auto_class={auto_class!r} is not a transformers class")
    if cls is None:
        arch = (getattr(config, "architectures", None) or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        if cls is None:
            raise CheckpointError(
                f"model {ckpts.models[0].name!r}: architecture {arch!r} is not a transformers "
                "class; pass auto_class (e.g. 'AutoModelForSequenceClassification')"
            )
    with _no_init(), torch.device(device), _default_dtype(dtype):
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    model.tie_weights()  # skipped by no_init_weights; the tied names must share one parameter
    for p in model.parameters():  # buffers keep their own dtype, as from_pretrained leaves them
        p.data = p.data.to(dtype)
    model.eval()
    model.requires_grad_(False)
    return model
