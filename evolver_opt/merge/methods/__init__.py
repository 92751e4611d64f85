"""Static merge methods, looked up by name in a registry that is the only list of them.

Adding a method is one file in this folder: a :class:`MergeMethod` subclass with a ``name``;
every module here is imported once and its methods registered. What the rest of the project
offers (the CLI's ``--method``, ``baselines``' grids, ``compare``'s rows, the mergers, the
study forms and start points) is read from each method's capabilities (``_base.py``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods._base import MergeMethod, MergeResult


def _discover() -> dict[str, type[MergeMethod]]:
    found: dict[str, type[MergeMethod]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, MergeMethod) and obj.name:
                if obj.name in found and found[obj.name] is not obj:
                    raise ConfigError(f"two merge methods are named {obj.name!r}")
                found[obj.name] = obj
    return found


_REGISTRY: dict[str, type[MergeMethod]] = _discover()


def list_methods(where: Callable[[type[MergeMethod]], bool] | None = None) -> list[str]:
    """Names of the registered methods (those ``where(cls)`` accepts), sorted."""
    return sorted(n for n, cls in _REGISTRY.items() if where is None or where(cls))


def method_class(name: str) -> type[MergeMethod]:
    """The class of method ``name``; an unknown name lists the valid ones."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(f"unknown merge method {name!r}; valid methods: {list_methods()}")
    return cls


def get_method(name: str) -> MergeMethod:
    """The method called ``name``; an unknown name lists the valid ones."""
    return method_class(name)()


def data_free(cls: type[MergeMethod]) -> bool:
    return cls.data is None


def form_methods() -> list[str]:
    """Methods that can be a study's ``form`` (a sum of per-task parts)."""
    return list_methods(lambda cls: cls.has_parts())


__all__ = [
    "MergeMethod",
    "MergeResult",
    "data_free",
    "form_methods",
    "get_method",
    "list_methods",
    "method_class",
]
