"""Writing a merge out: Hugging Face folders loadable with ``from_pretrained`` alone (one per
task head), the model card (``README.md``) and a mergekit YAML where mergekit can express it.
"""

from __future__ import annotations

from evolver_opt.export.folders import export_merged

__all__ = ["export_merged"]
