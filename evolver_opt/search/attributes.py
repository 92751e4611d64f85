"""The study user attributes evolver-opt writes, their JSON schemas, and the one checked read.

Anything read back from storage is untrusted: :func:`study_attrs` checks every
``evolver_opt:*`` attribute against its schema before anyone uses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import optuna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from evolver_opt.core.population import preview
from evolver_opt.errors import StateError
from evolver_opt.runtime.storage import describe_bad_json

ATTR_CONFIG = "evolver_opt:config"  # the study's config (JSON), written by open_study
ATTR_IDENTITY = "evolver_opt:identity"  # what the score depends on (the config hash's input)
ATTR_HASH = "evolver_opt:config_hash"
ATTR_SAMPLER = "evolver_opt:sampler"  # {"name", "seed", "options"}
ATTR_PRECISION = "evolver_opt:precision"  # PrecisionCheck
ATTR_RERANK = "evolver_opt:rerank"  # StoredRerank
ATTR_PROBLEM = "evolver_opt:problem"  # what a config-less study (the synthetic demo) solves


@dataclass(frozen=True)
class PrecisionCheck:
    """What a study's trials are scored in, and why."""

    setting: str  # auto | fp32 | bf16, as configured
    used: str  # fp32 | bf16
    reason: str
    threshold: float  # the argmax agreement below which ``auto`` falls back to float32
    agreement: dict[str, float] = field(default_factory=dict)  # start point -> agreement

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.agreement:
            return f"precision {self.used} ({self.reason})"
        low = min(self.agreement, key=self.agreement.__getitem__)
        return (
            f"precision {self.used} ({self.reason}); bf16/fp32 argmax agreement on the start "
            f"points: min {self.agreement[low]:.4f} ({low}), threshold {self.threshold}"
        )


class StoredSampler(BaseModel):
    """The JSON schema of ``evolver_opt:sampler``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    seed: int | None
    options: dict[str, Any]


MAX_TOP_K = 10**6  # re-ranking re-scores each trial: more is no study's budget
MAX_SAMPLE = 10**9  # examples per dev split: more than any data set holds


class RerankedTrial(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    trial: int = Field(ge=0)
    study_dev: float
    rerank_dev: float


class StoredRerank(BaseModel):
    """The JSON schema of ``evolver_opt:rerank`` (trials in study rank order)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    k: int = Field(ge=1, le=MAX_TOP_K)
    # the larger sample (None: all of each dev split), and the study's own
    dev_per_split: Annotated[int, Field(ge=1, le=MAX_SAMPLE)] | None
    study_dev_per_split: Annotated[int, Field(ge=1, le=MAX_SAMPLE)] | None
    metric: str
    precision: str
    trials: list[RerankedTrial] = Field(min_length=1)
    answer: int

    @model_validator(mode="after")
    def _answer_reranked(self) -> StoredRerank:
        if self.answer not in {t.trial for t in self.trials}:
            raise ValueError(f"answer {self.answer} is not one of the re-ranked trials")
        return self


_SCHEMAS: dict[str, TypeAdapter] = {
    ATTR_HASH: TypeAdapter(Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]),
    ATTR_IDENTITY: TypeAdapter(dict[str, Any]),
    ATTR_CONFIG: TypeAdapter(dict[str, Any]),
    ATTR_SAMPLER: TypeAdapter(StoredSampler),
    ATTR_PRECISION: TypeAdapter(PrecisionCheck),
    ATTR_RERANK: TypeAdapter(StoredRerank),
}


def study_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's user attributes, each ``evolver_opt:*`` one checked against its schema;
    text that is not JSON or a value of the wrong shape is a :class:`StateError` naming it."""
    try:
        attrs = study.user_attrs
    except ValueError as exc:  # json.JSONDecodeError: edited outside Optuna
        raise describe_bad_json(study._storage, study._study_id, exc) from None
    for key, schema in _SCHEMAS.items():
        if key in attrs:
            try:
                schema.validate_python(attrs[key])
            except ValidationError as exc:
                problem = exc.errors()[0]
                raise StateError(
                    f"study {study.study_name!r}: user attribute {key} = {preview(attrs[key])} "
                    f"is malformed ({'.'.join(map(str, problem['loc'])) or 'value'}: "
                    f"{problem['msg']}); the study was changed outside evolver-opt"
                ) from None
    return attrs
