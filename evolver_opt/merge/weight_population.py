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
    from evolver_opt.merge.engine import MergeEngine, TensorSlot
    from evolver_opt.merge.methods import MergeMethod
    from evolver_opt.merge.methods._base import SlotParts

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
        self._incremental: IncrementalMerge | None = None  # separable mergers' running sum
        self._scratch: torch.Tensor | None = None

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
        with self.engine.model_precision(torch.float32):  # exact, whatever the model holds
            for slot, c in enumerate(self.init_coefficients):
                self.engine.apply(c)
                self.row(slot).copy_(self.engine.output)
        self.init, self.holders, self.applied, self.extras = tuple(init), list(init), [], {}
        self.n_resets += 1
        self._incremental = None  # every row changed: rebuilt at the next merge

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
            cache = self._incremental
            if cache is None or cache.adopt(acc.slot, acc.trial):
                crossover_into(
                    row, row, reference, F=lineage.F, CR=lineage.CR, mask_seed=lineage.mask_seed
                )
            else:  # the merged sum follows the row: add L_slot(new - old)
                new = self._scratch_row()
                crossover_into(
                    new, row, reference, F=lineage.F, CR=lineage.CR, mask_seed=lineage.mask_seed
                )
                cache.replace(acc.slot, new)
                row.copy_(new)
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
        """Write ``method``'s merge of the population's rows into the working model (a
        ``separable`` method: from the kept sum of the rows' parts, see :class:`IncrementalMerge`)."""
        if method.separable:
            self.incremental(method, params).write(self.engine.output)
        else:
            method.merge(self._population_engine(), **params)
        self.engine.mark_written({"population_merge": method.name, "holders": list(self.holders)})

    def merge_offspring(
        self,
        method: MergeMethod,
        slot: int,
        offspring: torch.Tensor,
        trial: int | None = None,
        **params: Any,
    ) -> None:
        """Write the merge of the population with ``offspring`` in ``slot``'s row. A separable
        method computes only that slot's part (``sum - part(row) + part(offspring)``) and keeps
        the result for trial ``trial``, adopted when replay accepts it; any other method merges
        every row, the offspring swapped in. ``offspring`` may be overwritten."""
        if not method.separable:
            with self.substituted(slot, offspring):
                self.merge(method, **params)
            return
        cache = self.incremental(method, params)
        cache.write(self.engine.output, slot, offspring, trial)
        self.engine.mark_written(
            {"population_merge": method.name, "holders": list(self.holders), "offspring": trial}
        )

    def incremental(self, method: MergeMethod, params: dict[str, Any]) -> IncrementalMerge:
        """The running sum of ``method``'s parts over the rows (built on first use, kept in step
        by :meth:`sync`; the method's statistics are fixed per population, so its parameters are
        identified by object)."""
        key = (method.name, tuple(sorted((k, id(v)) for k, v in params.items())))
        if self._incremental is None or self._incremental.key != key:
            self._incremental = None  # free the old sum before building the new one
            engine = self._population_engine()
            parts = method.slot_parts(engine, **method.check_params(params))
            self._incremental = IncrementalMerge(key, parts, engine, self.rows[1:])
        return self._incremental

    def _scratch_row(self) -> torch.Tensor:
        if self._scratch is None:
            self._scratch = torch.empty_like(self.rows[0])
        return self._scratch

    def _population_engine(self) -> Any:
        """The engine seen through the population: its 'models' are the individuals' rows."""
        if self._merge_engine is None or self._merge_engine.output is not self.engine.output:
            e = copy.copy(self.engine)  # again when the working model changed dtype
            e.stacked = self.rows
            e.genome = Genome(tuple(f"slot{s}" for s in range(self.size)), e.genome.groups)
            e._kernel = GroupMatVec(self.rows, self.engine.output, self.engine.layout.group_spans)
            self._merge_engine = e
        return self._merge_engine

    def nbytes(self) -> int:
        """Bytes held by the population (rows and kept extras)."""
        extra = sum(t.numel() * t.element_size() for t in self.extras.values())
        if self._incremental is not None:
            extra += self._incremental.nbytes()
        return self.rows.numel() * self.rows.element_size() + extra


class IncrementalMerge:
    """A separable merge of the population's rows, kept as a float64 running sum.

    ``total = constant + sum_s L_s(row_s)`` (the method's :class:`SlotParts`); the merge with
    an offspring ``u`` in slot ``s`` is ``total + L_s(u - row_s)``: one slot's part instead of
    every slot's (RegMean: one ``d_in x d_in`` product per linear layer instead of a Gram
    product per slot and a solve). The last such result is kept as a candidate and becomes the
    total when replay accepts that offspring; any other change of a row goes through
    :meth:`replace`. Memory: two float64 vectors of the merged size, and the parts' own maps.
    """

    def __init__(self, key: Any, parts: SlotParts, engine: Any, rows: torch.Tensor) -> None:
        self.key, self.parts, self.rows = key, parts, rows
        self.tensors: list[TensorSlot] = list(engine.slots())
        self.spans = [(t.name, *engine.layout.span(t.name)) for t in self.tensors]
        self.total = torch.zeros(rows.shape[1], dtype=torch.float64, device=rows.device)
        self._candidate: torch.Tensor | None = None
        self._candidate_of: tuple[int, int] | None = None  # (slot, trial)
        with torch.no_grad():
            for t, (_, start, end) in zip(self.tensors, self.spans):
                out = self.total[start:end].view(t.shape)
                constant = parts.constant(t)
                if constant is not None:
                    out.copy_(constant)
                for s in range(rows.shape[0]):
                    out.add_(parts.part(s, t, rows[s, start:end].view(t.shape)))

    def _with(self, out: torch.Tensor, slot: int, new: torch.Tensor) -> None:
        """``out = total + L_slot(new - row_slot)``, tensor by tensor."""
        row = self.rows[slot]
        with torch.no_grad():
            for t, (_, start, end) in zip(self.tensors, self.spans):
                delta = (new[start:end] - row[start:end]).view(t.shape)
                part = self.parts.part(slot, t, delta).reshape(-1)
                torch.add(self.total[start:end], part, out=out[start:end])

    def write(
        self,
        out: torch.Tensor,
        slot: int | None = None,
        offspring: torch.Tensor | None = None,
        trial: int | None = None,
    ) -> None:
        """Write the merge (with ``offspring`` in ``slot``, if given) into flat ``out``."""
        if slot is None or offspring is None:
            with torch.no_grad():
                out.copy_(self.total)
            return
        if self._candidate is None:
            self._candidate = torch.empty_like(self.total)
        self._candidate_of = None
        self._with(self._candidate, slot, offspring)
        self._candidate_of = None if trial is None else (slot, trial)
        with torch.no_grad():
            out.copy_(self._candidate)

    def adopt(self, slot: int, trial: int) -> bool:
        """Replay accepted ``trial`` into ``slot``: take its kept merge as the total if it is
        the last one computed (True; the caller then updates the row), else False."""
        if self._candidate_of != (slot, trial):
            return False
        assert self._candidate is not None
        self.total, self._candidate = self._candidate, self.total
        self._candidate_of = None
        return True

    def replace(self, slot: int, new: torch.Tensor) -> None:
        """Row ``slot`` is about to become ``new``: move the total along."""
        self._with(self.total, slot, new)
        self._candidate_of = None

    def nbytes(self) -> int:
        held = [self.total] + ([self._candidate] if self._candidate is not None else [])
        return sum(t.numel() * t.element_size() for t in held)
