"""What is left of a compare, per kind of work, and the time it takes at the rates measured so
far (issue 29, item 4: the estimate counts every row, not only the studies' trials).

Kinds of work and the rate each is estimated at until one of its own is timed:

- ``trial``: one study trial (a merge and the dev splits);
- ``answer``: a study's best trial scored on the test splits;
- ``reference``: a reference row (a static merge or an expert alone: a merge, the dev and the
  test splits), at first one trial plus one answer;
- ``point``: one grid point of a tuned baseline (a merge and the dev splits), at the trial
  rate;
- ``tuned``: a tuned row scored on the test splits, at the answer rate.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from evolver_opt.runtime.clock import about

if TYPE_CHECKING:
    from evolver_opt.search.objective import MergeSetup

KINDS = ("trial", "answer", "reference", "point", "tuned")
_NAMES = {  # one, many
    "trial": ("trial", "trials"),
    "answer": ("test scoring of a study's answer", "test scorings of the studies' answers"),
    "reference": ("reference row", "reference rows"),
    "point": ("tuned grid point", "tuned grid points"),
    "tuned": ("tuned row", "tuned rows"),
}


class CompareEta:
    """Work left per kind, the seconds measured per kind, and the message that adds them up."""

    def __init__(self, left: dict[str, int], note: str = "") -> None:
        unknown = sorted(set(left) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown kinds of work {unknown}; expected {KINDS}")
        self.left = {kind: max(0, left.get(kind, 0)) for kind in KINDS}
        self.done = dict.fromkeys(KINDS, 0)
        self.seconds = dict.fromkeys(KINDS, 0.0)
        self.note = note  # work no rate covers, named in the message
        self._start = 0.0

    # the trial API the compare loop uses around each study's run
    def start(self) -> None:
        self._start = time.perf_counter()

    def ran(self, n: int) -> None:
        self.record("trial", n, time.perf_counter() - self._start)

    def skip(self, n: int, kind: str = "trial") -> None:
        """``n`` of ``kind`` finished before this call (resumed studies): not to do, not timed."""
        self.left[kind] = max(0, self.left[kind] - n)

    @contextmanager
    def timed(self, kind: str, n: int = 1) -> Iterator[None]:
        """Time ``n`` of ``kind`` done inside the block."""
        start = time.perf_counter()
        yield
        self.record(kind, n, time.perf_counter() - start)

    def record(self, kind: str, n: int, seconds: float) -> None:
        self.done[kind] += n
        self.seconds[kind] += seconds
        self.left[kind] = max(0, self.left[kind] - n)

    def rate(self, kind: str) -> float | None:
        """Seconds per unit of ``kind``: measured, else from the kinds it is made of."""
        if self.done[kind]:
            return self.seconds[kind] / self.done[kind]
        parts = {"reference": ("trial", "answer"), "point": ("trial",), "tuned": ("answer",)}
        rates = [self.rate(p) for p in parts.get(kind, ())]
        if not rates or any(r is None for r in rates):
            return None
        return sum(r for r in rates if r is not None)

    def message(self) -> str | None:
        """``compare: 40 trials, 9 reference rows left: about 6 min (...)``; None before any
        rate is measured or when nothing is left."""
        todo = {k: n for k, n in self.left.items() if n > 0}
        if not todo or not any(self.done.values()):
            return None
        total, parts, untimed = 0.0, [], []
        for kind, n in todo.items():
            parts.append(f"{n} {_NAMES[kind][n != 1]}")
            rate = self.rate(kind)
            if rate is None:
                untimed.append(_NAMES[kind][1])
            else:
                total += n * rate
        rates = ", ".join(
            f"{self.seconds[k] / self.done[k]:.1f} s/{_NAMES[k][0].split(' of ')[0]}"
            for k in KINDS
            if self.done[k]
        )
        timed = all(self.rate(kind) is None for kind in todo)
        head = f"compare: {', '.join(parts)} left" + ("" if timed else f": {about(total)}")
        extra = [
            f"{'the' if timed else 'plus the'} {' and '.join(untimed)}: timed once one is done"
        ]
        extra = (extra if untimed else []) + ([self.note] if self.note else [])
        return f"{head} ({rates})" + "".join(f"; {e}" for e in extra)


def compare_eta(
    setup: MergeSetup,
    *,
    studies: int,
    n_trials: int,
    references: int,
    tuned: bool,
    own_form: bool = True,
) -> CompareEta:
    """The work of a compare: ``studies`` studies of ``n_trials`` trials and their answers,
    ``references`` reference rows, and the tuned rows (every method's grid and the data methods
    with ``tuned``; else, with ``own_form``, the form's own method when the study has one)."""
    from evolver_opt.experiments.baselines import data_methods_list, default_grids
    from evolver_opt.merge.methods import method_class
    from evolver_opt.search.forms import form_methods_of

    if tuned:
        grids, data = default_grids(), data_methods_list()
    elif own_form and setup.form is not None:
        methods = form_methods_of(setup.form)
        grids = {m: [dict(p) for p in method_class(m).grid] for m in methods}
        data = [m for m in methods if not grids[m]]
        grids = {m: g for m, g in grids.items() if g}
    else:
        grids, data = {}, []
    left = {
        "trial": studies * n_trials,
        "answer": studies,
        "reference": references,
        "point": sum(len(g) for g in grids.values()) + len(data),
        "tuned": len(grids) + len(data),
    }
    note = f"plus the statistics of {', '.join(data)} unless cached" if data else ""
    return CompareEta(left, note)
