"""Static merge methods, looked up by name in a registry."""

from __future__ import annotations

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods._base import MergeMethod, MergeResult
from evolver_opt.merge.methods.average import Average
from evolver_opt.merge.methods.dare import Dare
from evolver_opt.merge.methods.fisher import Fisher
from evolver_opt.merge.methods.regmean import RegMean
from evolver_opt.merge.methods.task_arithmetic import TaskArithmetic
from evolver_opt.merge.methods.ties import Ties

_REGISTRY: dict[str, type[MergeMethod]] = {
    cls.name: cls for cls in (Average, TaskArithmetic, Ties, Dare, Fisher, RegMean)
}


def list_methods() -> list[str]:
    """Names of all registered static merge methods."""
    return sorted(_REGISTRY)


def get_method(name: str) -> MergeMethod:
    """The method called ``name``; an unknown name lists the valid ones."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(f"unknown merge method {name!r}; valid methods: {list_methods()}")
    return cls()


__all__ = ["MergeMethod", "MergeResult", "get_method", "list_methods"]
