"""What a built setup's results depend on, as JSON: the key of the on-disk caches of its
precision check (``precision_cache``) and of a compare's reference rows (``row_cache``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch


def setup_payload(setup: Any) -> dict[str, Any]:
    """The study's identity, the base's and experts' files, the dev sample and torch's build."""
    from evolver_opt.search.merge_stats import expert_identity

    engine = setup.engine
    folders = [engine.checkpoints.base.path, *(m.path for m in engine.checkpoints.models)]
    return {
        "identity": setup.config.identity(),
        "files": [expert_identity(Path(f)) for f in folders],
        "dev": [setup.evaluator.splits[k].fingerprint for k in setup.dev_keys],
        "torch": torch.__version__,
    }


def digest(payload: dict[str, Any]) -> str:
    """The sha256 of ``payload`` as sorted JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
