"""Real multi-domain text from package archives: sources, cleaning, splits, the test guard.

``load_split(domain, "dev")`` gives a :class:`Split`; test splits come only from
:mod:`evolver_opt.data.reporting`, and ``require_selectable`` refuses them for selection.
"""

from __future__ import annotations

from evolver_opt.data.api import Split, list_domains, load_split, require_selectable
from evolver_opt.data.pipeline import DOMAINS, ensure_prepared, is_prepared, prepare, size_table
from evolver_opt.data.splits import SplitPlan

__all__ = [
    "DOMAINS",
    "Split",
    "SplitPlan",
    "ensure_prepared",
    "is_prepared",
    "list_domains",
    "load_split",
    "prepare",
    "require_selectable",
    "size_table",
]
