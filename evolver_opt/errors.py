"""The exception hierarchy: every error evolver-opt raises on purpose is an ``EvolverError``."""

from __future__ import annotations


class EvolverError(Exception):
    """Base class of all evolver-opt errors."""


class ConfigError(EvolverError, ValueError):
    """A configuration value is invalid; the message names the field, the value and what is allowed."""


class StateError(EvolverError, ValueError):
    """Sampler or optimizer state read from storage is malformed (not JSON, wrong schema)."""


class CheckpointError(EvolverError):
    """A checkpoint is missing, unsafe (pickle) or incompatible with the others."""


class StorageError(EvolverError):
    """A storage cannot be opened or used (unreachable, wrong schema version, ...)."""


class SplitError(EvolverError):
    """A data split is used for something it may not be used for (e.g. selecting on ``test``)."""
