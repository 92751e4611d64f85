"""The weight-space Evolver population in memory: rebuilt by replaying accepted offspring.

:class:`WeightPopulation` holds one flat row per individual, stacked under the base row like
the engine's own ``stacked`` (so a static merge method can run on the population as if its
individuals were the fine-tuned models). Replay (``core.weight_evolution.replay``) says which
trial holds each slot, in acceptance order; :meth:`WeightPopulation.sync` applies the new
acceptances in place: ``row[slot] = where(mask, (1 - F) x_parent + F x_reference, x_parent)``.

Memory: ``(pop_size + 1) x`` the merged weights' bytes (the population and the base), on top of
the engine's ``(N + 1)`` rows and working model. Transient extras: in merger mode one offspring
buffer while a trial runs; with several workers, one buffer per replaced individual that an
offspring still running (or accepted later in replay order) was derived from. One worker never
needs such a buffer.

Crossover masks are drawn on the CPU by ``torch.Generator`` seeded with the offspring's
``mask_seed``, in fixed chunks of :data:`MASK_CHUNK` scalars, so every process and device
draws the same mask.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from evolver_opt.core.genome import Genome
from evolver_opt.core.weight_evolution import Acceptance, ElementLineage, Population
from evolver_opt.errors import StateError
from evolver_opt.merge.kernels import GroupMatVec

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine
    from evolver_opt.merge.methods import MergeMethod

MASK_CHUNK = 1 << 20


def crossover_into(
    out: torch.Tensor,
    parent: torch.Tensor,
    reference: torch.Tensor,
    *,
    F: float,
    CR: float,
    mask_seed: int,
) -> int:
    """``out = where(mask, (1 - F) parent + F reference, parent)``; ``out`` may be ``parent``.

    The mask takes each scalar from the mutant with probability ``CR`` and at least one scalar
    (paper, Eq. 3's ``j_rand``). Returns how many scalars came from the mutant.
    """
    n = out.numel()
    generator = torch.Generator(device="cpu").manual_seed(int(mask_seed))
    taken = 0
    with torch.no_grad():
        for start in range(0, n, MASK_CHUNK):
            end = min(n, start + MASK_CHUNK)
            mask = torch.rand(end - start, generator=generator) < CR
            count = int(mask.sum())
            if not count:
                continue
            taken += count
            p = parent[start:end]
            mutant = torch.lerp(p.float(), reference[start:end].float(), F)
            out[start:end].copy_(torch.where(mask.to(out.device), mutant, p.float()))
        if not taken and n:
            j = int(mask_seed) % n
            out[j] = torch.lerp(parent[j].float(), reference[j].float(), F)
            taken = 1
    return taken


class WeightPopulation:
    """Rows of the individuals, kept equal to the replayed population of one study.

    Args:
        engine: the merge engine (its base row, working model and layout are used).
        init_coefficients: per initial individual, the ``(n_models, n_groups)`` coefficients
            that make it (one-hot: the fine-tuned model itself; 1/N: the average).
    """

    def __init__(self, engine: MergeEngine, init_coefficients: Sequence[np.ndarray]) -> None:
        if len(init_coefficients) < 2:
            raise StateError(f"a population needs 2 individuals, got {len(init_coefficients)}")
        self.engine = engine
        self.init_coefficients = [np.asarray(c, dtype=np.float64) for c in init_coefficients]
        size = len(self.init_coefficients)
        numel = engine.output.numel()
        self.rows = torch.empty(size + 1, numel, dtype=engine.dtype, device=engine.device)
        self.rows[0].copy_(engine.stacked[0])
        self.holders: list[int] = []
        self.applied: list[Acceptance] = []
        self.extras: dict[int, torch.Tensor] = {}
        self.init: tuple[int, ...] = ()
        self.n_resets = 0
        self._merge_engine: Any = None

    # -- replay ---------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.rows.shape[0] - 1

    def row(self, slot: int) -> torch.Tensor:
        return self.rows[1 + slot]

    def reset(self, init: Sequence[int]) -> None:
        """The initial population again (each individual from its coefficients)."""
        if len(init) != self.size:
            raise StateError(f"the study has {len(init)} initial individuals; expected {self.size}")
        for slot, c in enumerate(self.init_coefficients):
            self.engine.apply(c)
            self.row(slot).copy_(self.engine.output)
        self.init, self.holders, self.applied, self.extras = tuple(init), list(init), [], {}
        self.n_resets += 1

    def sync(
        self,
        population: Population,
        lineages: Mapping[int, ElementLineage],
        unfinished: Iterable[int] = (),
    ) -> None:
        """Make the rows hold ``population``. ``lineages``: every trial's lineage by trial number;
        replaced individuals that a trial in ``unfinished`` still needs are kept as extras."""
        in_flight = [lineages[n] for n in unfinished if n in lineages]
        done = len(self.applied)
        if population.init != self.init or population.accepted[:done] != self.applied:
            self.reset(population.init)  # first use, or completions arrived out of order
            done = 0
        todo = population.accepted[done:]
        for i, acc in enumerate(todo):
            if self.holders[acc.slot] != acc.parent_trial:
                raise StateError(f"replay: trial {acc.trial} needs parent {acc.parent_trial} "
                                 f"in slot {acc.slot}, which holds {self.holders[acc.slot]}")  # fmt: skip
            lineage = lineages.get(acc.trial)
            if lineage is None or lineage.role != "offspring":
                raise StateError(f"replay: no offspring lineage for accepted trial {acc.trial}")
            reference = self.weights(acc.reference_trial)
            if acc.parent_trial in self._needed(todo[i + 1 :], in_flight):
                self.extras[acc.parent_trial] = self.row(acc.slot).clone()
            row = self.row(acc.slot)
            crossover_into(
                row, row, reference, F=lineage.F, CR=lineage.CR, mask_seed=lineage.mask_seed
            )
            self.holders[acc.slot] = acc.trial
            self.applied.append(acc)
        needed = self._needed((), in_flight)
        self.extras = {t: w for t, w in self.extras.items() if t in needed}

    @staticmethod
    def _needed(later: Sequence[Acceptance], in_flight: Sequence[ElementLineage]) -> set[int]:
        out = {a.reference_trial for a in later}
        for lineage in in_flight:
            out |= lineage.needs()
        return out

    def weights(self, trial: int) -> torch.Tensor:
        """The flat weights of individual ``trial`` (a current holder or a kept extra)."""
        if trial in self.holders:
            return self.row(self.holders.index(trial))
        if trial in self.extras:
            return self.extras[trial]
        raise StateError(f"the weights of trial {trial} are no longer held")

    def has(self, trial: int) -> bool:
        return trial in self.holders or trial in self.extras

    # -- offspring and merges ---------------------------------------------------------------
    def offspring_into(self, out: torch.Tensor, lineage: ElementLineage) -> int:
        """Write offspring ``lineage`` into ``out`` (e.g. the engine's working output)."""
        assert lineage.parent_trial is not None and lineage.reference_trial is not None
        return crossover_into(
            out,
            self.weights(lineage.parent_trial),
            self.weights(lineage.reference_trial),
            F=lineage.F,
            CR=lineage.CR,
            mask_seed=lineage.mask_seed,
        )

    @contextlib.contextmanager
    def substituted(self, slot: int, weights: torch.Tensor) -> Iterator[None]:
        """Within the block, ``slot``'s row holds ``weights`` (swapped back after, chunkwise)."""
        row = self.row(slot)
        self._swap(row, weights)
        try:
            yield
        finally:
            self._swap(row, weights)

    @staticmethod
    def _swap(a: torch.Tensor, b: torch.Tensor) -> None:
        with torch.no_grad():
            for start in range(0, a.numel(), MASK_CHUNK):
                end = min(a.numel(), start + MASK_CHUNK)
                tmp = a[start:end].clone()
                a[start:end].copy_(b[start:end])
                b[start:end].copy_(tmp)

    def merge(self, method: MergeMethod, **params: Any) -> None:
        """Write ``method``'s merge of the population's rows into the working model."""
        engine = self._population_engine()
        method.merge(engine, **params)
        self.engine.mark_written({"population_merge": method.name, "holders": list(self.holders)})

    def _population_engine(self) -> Any:
        """The engine seen through the population: its 'models' are the individuals' rows."""
        if self._merge_engine is None:
            e = copy.copy(self.engine)
            e.stacked = self.rows
            e.genome = Genome(tuple(f"slot{s}" for s in range(self.size)), e.genome.groups)
            e._kernel = GroupMatVec(self.rows, self.engine.output, self.engine.layout.group_spans)
            self._merge_engine = e
        return self._merge_engine

    def nbytes(self) -> int:
        """Bytes held by the population (rows and kept extras)."""
        extra = sum(t.numel() * t.element_size() for t in self.extras.values())
        return self.rows.numel() * self.rows.element_size() + extra
