"""MergeEngine: checkpoints -> stacked flat weights -> coefficients -> one working model, in place.

Example::

    engine = MergeEngine.from_dirs("base", ["m_a", "m_b"], granularity="layer")
    engine.apply(engine.uniform())        # the working model now holds the average
    logits = engine.model(**batch).logits
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from evolver_opt.core.genome import Coefficients as ArrayCoefficients
from evolver_opt.core.genome import Genome
from evolver_opt.errors import ConfigError
from evolver_opt.merge.checkpoints import CheckpointSet, label_space, load_checkpoints
from evolver_opt.merge.compat import HEAD_MODES, Plan, plan_merge
from evolver_opt.merge.groups import GRANULARITIES, Layout, build_layout
from evolver_opt.merge.kernels import GroupMatVec
from evolver_opt.merge.working_model import build_working_model, set_parameter

Coefficients = ArrayCoefficients | torch.Tensor


@dataclass(frozen=True)
class TensorSlot:
    """One merged tensor: its name, shape, group, and views into the stacked rows and output."""

    name: str
    shape: tuple[int, ...]
    group: int
    base: torch.Tensor
    models: tuple[torch.Tensor, ...]
    out: torch.Tensor


class MergeEngine:
    """Task-arithmetic merges written in place into one preallocated working model.

    Build it with :meth:`from_dirs`. Attributes the search layer reads:

    - ``model``: the working model; its merged parameters are views of ``output``;
    - ``genome``: the coefficient layout (:class:`~evolver_opt.core.genome.Genome`), also as
      ``model_names``, ``group_names``, ``param_names`` (``w.<model>.<group>``, model-major),
      ``n_models``, ``n_groups``;
    - ``heads_merged``; with separate heads ``task_heads`` and :meth:`use_head`;
    - ``stacked``: ``(N + 1, P)`` rows, the base then each fine-tuned model (the task vectors
      are ``stacked[1 + i] - stacked[0]``; storing the models keeps one-hot merges exact);
    - ``version`` and ``state``: what the working model holds now.
    """

    def __init__(self, model: nn.Module, ckpts: CheckpointSet, plan: Plan, layout: Layout,
                 granularity: str, device: torch.device, dtype: torch.dtype,
                 model_dtype: torch.dtype | None = None) -> None:  # fmt: skip
        self.model, self.checkpoints, self.plan, self.layout = model, ckpts, plan, layout
        self.granularity, self.device, self.dtype = granularity, device, dtype
        self.model_dtype = model_dtype or dtype
        self.genome = Genome(tuple(ckpts.names), layout.group_names)
        n = self.n_models
        self.output = torch.empty(layout.numel, dtype=self.model_dtype, device=device)
        self._bind_parameters()  # frees the constructed parameters before the rows exist
        self.stacked = torch.empty(n + 1, layout.numel, dtype=dtype, device=device)
        self._load_stacked()
        self.task_heads: dict[str, dict[str, torch.Tensor]] = {}
        self.active_head: str | None = None
        if not plan.heads_merged:
            self._load_heads()
        self._kernel = GroupMatVec(self.stacked, self.output, layout.group_spans)
        self._outputs = {self.model_dtype: (self.output, self._kernel)}
        # study forms: other rows the coefficients can weigh (name -> (K + 1, P) rows), with a
        # kernel per (form, working dtype); the experts' rows are the form None. A form's rows
        # are the experts' (K = N, the engine's genome) unless it has its own genome.
        self.forms: dict[str, torch.Tensor] = {}
        self.form_made_by: dict[str, Any] = {}
        self.form_genomes: dict[str, Genome] = {}
        self._form_kernels: dict[tuple[str, torch.dtype], GroupMatVec] = {}
        self.version = 0
        self.state: dict[str, Any] = {}
        self.apply(np.zeros(self.genome.shape))

    @classmethod
    def from_dirs(
        cls,
        base_dir: str | Path,
        model_dirs: Sequence[str | Path],
        *,
        granularity: str = "model",
        heads: str = "auto",
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        model_dtype: torch.dtype | None = None,
        model_names: Sequence[str] | None = None,
        auto_class: Any = None,
    ) -> MergeEngine:
        """Load, check and stack the checkpoints; peak memory about (N + 2) x model bytes.

        ``dtype`` is that of the stacked rows; ``model_dtype`` (default: the same) that of the
        working model the merge writes, e.g. float32 rows into a bfloat16 model for bfloat16
        evaluation with every merge summed in float32 and rounded once."""
        for d in (dtype, model_dtype or dtype):
            if d not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
                raise ConfigError(f"dtype={d} is not a floating dtype (float32, bfloat16, ...)")
        if granularity not in GRANULARITIES:
            raise ConfigError(f"granularity={granularity!r} is not one of {list(GRANULARITIES)}")
        if heads not in HEAD_MODES:
            raise ConfigError(f"heads={heads!r} is not one of {list(HEAD_MODES)}")
        ckpts = load_checkpoints(
            base_dir, model_dirs, model_names=model_names, allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
        device = torch.device(device)
        model = build_working_model(ckpts, auto_class, device, model_dtype or dtype)
        plan = plan_merge(ckpts, model, heads)
        merged = [n for n in plan.names if plan.heads_merged or n not in plan.head_names]
        layout = build_layout(
            merged, [plan.shapes[n] for n in merged], granularity, plan.head_names
        )
        return cls(model, ckpts, plan, layout, granularity, device, dtype, model_dtype)

    # -- construction -------------------------------------------------------------------
    def _bind_parameters(self) -> None:
        """Make every merged parameter a view of ``self.output`` (tied names share one)."""
        for name, shape, off in zip(self.layout.names, self.layout.shapes, self.layout.offsets):
            n = int(np.prod(shape, dtype=np.int64))
            view = self.output[off : off + n].view(shape)
            set_parameter(self.model, self.plan.aliases[name], nn.Parameter(view, False))

    def _load_stacked(self) -> None:
        ckpts = [self.checkpoints.base, *self.checkpoints.models]
        for row, (ckpt, keys) in enumerate(zip(ckpts, self.plan.keys)):
            wanted = {keys[n]: n for n in self.layout.names if keys[n] is not None}
            for name in self.layout.names:
                if keys[name] is None:  # base without a task head: its head counts as zero
                    s, e = self.layout.span(name)
                    self.stacked[row, s:e].zero_()
            for key, tensor in ckpt.iter_read(wanted):
                s, e = self.layout.span(wanted[key])
                self.stacked[row, s:e].copy_(tensor.reshape(-1))
            if row == 0:
                self._load_buffers(ckpt)

    def _load_buffers(self, base: Any) -> None:
        buffers = dict(self.model.named_buffers())
        present = [k for k in buffers if k in base.index]
        for key, tensor in base.iter_read(present):
            if buffers[key].shape == tensor.shape:
                buffers[key].copy_(tensor)

    def _load_heads(self) -> None:
        for ckpt, keys in zip(self.checkpoints.models, self.plan.keys[1:]):
            wanted = {keys[n]: n for n in self.plan.head_names}
            self.task_heads[ckpt.name] = {
                wanted[k]: t.to(device=self.device, dtype=self.dtype)  # exact; rounded on use
                for k, t in ckpt.iter_read(wanted)
            }
        self.use_head(self.model_names[0])

    # -- shape of the search space ------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self.genome.models)

    @property
    def group_names(self) -> list[str]:
        return list(self.genome.groups)

    @property
    def param_names(self) -> list[str]:
        return list(self.genome.param_names)

    @property
    def n_models(self) -> int:
        return len(self.genome.models)

    @property
    def n_groups(self) -> int:
        return len(self.genome.groups)

    @property
    def heads_merged(self) -> bool:
        """True when the task heads are merged like the body (one shared label space)."""
        return self.plan.heads_merged

    def one_hot(self, model: int | str) -> np.ndarray:
        """Coefficients that reproduce one fine-tuned model exactly."""
        return self.genome.one_hot(model)

    def uniform(self) -> np.ndarray:
        """1/N for every model and group: the plain weighted average."""
        return self.genome.uniform()

    @property
    def kernel_mode(self) -> str:
        """How :meth:`apply` sums: ``triton`` (one fused launch) or a torch mode (``mv``, ...)."""
        return self._kernel.mode

    # -- study forms --------------------------------------------------------------------
    def add_form(
        self,
        name: str,
        parts: Iterable[tuple[TensorSlot, torch.Tensor]],
        made_by: Any = None,
    ) -> None:
        """Keep rows ``base + part_i`` (a method's per-task parts, :meth:`MergeMethod.task_parts`)
        as form ``name``: ``apply(c, form=name)`` then writes ``base + sum_i c[i, g] part_i``.
        ``made_by`` (e.g. the method and its parameters) is kept in ``form_made_by`` so a
        caller can reuse a form built the same way. Memory: another ``(N + 1) x P`` rows in
        the engine's dtype."""
        rows = torch.empty_like(self.stacked)
        rows[0].copy_(self.stacked[0])
        seen = 0
        with torch.no_grad():
            for slot, slot_parts in parts:
                start, end = self.layout.span(slot.name)
                base = slot.base.float().reshape(-1)
                for i in range(self.n_models):
                    rows[i + 1, start:end].copy_(base + slot_parts[i].reshape(-1))
                seen += end - start
        if seen != self.layout.numel:
            raise ConfigError(f"form {name!r} gave parts for {seen} of {self.layout.numel} weights")
        self._keep_form(name, rows, made_by)

    def add_form_rows(
        self, name: str, task_rows: torch.Tensor, made_by: Any = None, genome: Genome | None = None
    ) -> None:
        """Form ``name`` from rows ``base + part_k`` built before (``form_rows(name)``, e.g.
        read from a cache): ``(N, P)`` in the engine's dtype, or ``(K, P)`` with ``genome``
        naming the K rows (its models) over the engine's groups: then ``apply(c, form=name)``
        takes ``(K, n_groups)`` coefficients."""
        genome = genome or self.genome
        if genome.groups != self.genome.groups:
            raise ConfigError(f"form {name!r}: its genome's groups are not the engine's")
        expected = (len(genome.models), self.layout.numel)
        if tuple(task_rows.shape) != expected or task_rows.dtype != self.dtype:
            raise ConfigError(
                f"form {name!r} rows are {tuple(task_rows.shape)} {task_rows.dtype}, expected "
                f"{expected} {self.dtype}"
            )
        rows = torch.empty(expected[0] + 1, expected[1], dtype=self.dtype, device=self.device)
        rows[0].copy_(self.stacked[0])
        rows[1:].copy_(task_rows)
        self._keep_form(name, rows, made_by)
        if genome is not self.genome:
            self.form_genomes[name] = genome

    def form_genome(self, form: str | None) -> Genome:
        """The coefficients' layout for ``form`` (the engine's own unless the form has one)."""
        return self.form_genomes.get(form, self.genome) if form is not None else self.genome

    def form_rows(self, name: str) -> torch.Tensor:
        """Form ``name``'s rows ``base + part_i`` without the base row: ``(N, P)``."""
        return self.forms[name][1:]

    def _keep_form(self, name: str, rows: torch.Tensor, made_by: Any) -> None:
        if not torch.isfinite(rows).all():
            raise ConfigError(f"form {name!r} has non-finite weights")
        self.forms[name] = rows
        self.form_made_by[name] = made_by
        self.form_genomes.pop(name, None)
        self._form_kernels = {k: v for k, v in self._form_kernels.items() if k[0] != name}
        self.mark_written({"form_built": name})  # building may have used the working model

    def drop_form(self, name: str) -> None:
        """Free form ``name``'s rows (no-op when absent). The working model keeps what it
        holds; it is no longer re-applied from the form's coefficients."""
        if self.state.get("form") == name:
            kept = {k: v for k, v in self.state.items() if k not in ("coefficients", "form")}
            self.state = {**kept, "from_dropped_form": name}
        self.forms.pop(name, None)
        self.form_made_by.pop(name, None)
        self.form_genomes.pop(name, None)
        self._form_kernels = {k: v for k, v in self._form_kernels.items() if k[0] != name}

    def _kernel_for(self, form: str | None) -> GroupMatVec:
        if form is None:
            return self._kernel
        if form not in self.forms:
            raise ConfigError(f"form {form!r} was not added; forms: {sorted(self.forms)}")
        key = (form, self.model_dtype)
        if key not in self._form_kernels:
            spans = self.layout.group_spans
            self._form_kernels[key] = GroupMatVec(self.forms[form], self.output, spans)
        return self._form_kernels[key]

    # -- the hot path -------------------------------------------------------------------
    def apply(self, coefficients: Coefficients, form: str | None = None) -> None:
        """Write ``theta_base + sum_i c[i, g] * tau_i`` into the working model, in place
        (``form``: the parts of an added form instead of the task vectors ``tau_i``)."""
        if isinstance(coefficients, torch.Tensor):
            coefficients = coefficients.detach().cpu().double().numpy()
        if form is not None and form not in self.forms:
            raise ConfigError(f"form {form!r} was not added; forms: {sorted(self.forms)}")
        c = self.form_genome(form).matrix(coefficients)
        rows = np.empty((self.n_groups, c.shape[0] + 1))
        rows[:, 0] = 1.0 - c.sum(axis=0)
        rows[:, 1:] = c.T
        kernel = self._kernel_for(form)
        with torch.no_grad():
            kernel(rows)
        self.mark_written({"coefficients": c.tolist(), **({"form": form} if form else {})})

    def mark_written(self, state: dict[str, Any]) -> None:
        """Record what the working model now holds (methods that write directly call this)."""
        self.version += 1
        self.state = dict(state)

    @contextlib.contextmanager
    def model_precision(self, dtype: torch.dtype) -> Iterator[None]:
        """Within the block the working model holds its weights in ``dtype`` (e.g. float32 to
        re-score a bfloat16 study's answer), with the same merge and head; restored after.

        A coefficient merge is re-applied exactly; another one (a static method's direct write)
        is converted from the weights the model holds now."""
        before = self.model_dtype
        self.set_model_dtype(dtype)
        try:
            yield
        finally:
            self.set_model_dtype(before)

    def set_model_dtype(self, dtype: torch.dtype) -> None:
        """Hold the working model's weights in ``dtype`` from now on (see ``model_precision``)."""
        if dtype == self.model_dtype:
            return
        old = self.output
        if dtype not in self._outputs:
            out = torch.empty(self.layout.numel, dtype=dtype, device=self.device)
            self._outputs[dtype] = (out, GroupMatVec(self.stacked, out, self.layout.group_spans))
        self.output, self._kernel = self._outputs[dtype]
        self.model_dtype = dtype
        self._bind_parameters()
        merged = set(self.layout.names)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name not in merged:  # a task head kept separate
                    p.data = p.data.to(dtype)
        if self.active_head is not None:
            self.use_head(self.active_head)
        if "coefficients" in self.state:
            self.apply(self.state["coefficients"], self.state.get("form"))
        else:
            self.output.copy_(old)

    def slots(self) -> Iterator[TensorSlot]:
        """Every merged tensor with views of the base row, the model rows and the output."""
        starts = [s for s, _ in self.layout.group_spans]
        for name, shape, off in zip(self.layout.names, self.layout.shapes, self.layout.offsets):
            e = off + int(np.prod(shape, dtype=np.int64))
            group = int(np.searchsorted(starts, off, side="right")) - 1
            rows = tuple(self.stacked[j, off:e].view(shape) for j in range(self.n_models + 1))
            yield TensorSlot(name, shape, group, rows[0], rows[1:], self.output[off:e].view(shape))

    def merged_parameters(self) -> list[tuple[str, nn.Parameter, int, int]]:
        """``(name, parameter, start, end)`` of every merged parameter of the working model."""
        return [(n, self.model.get_parameter(n), *self.layout.span(n)) for n in self.layout.names]

    # -- heads --------------------------------------------------------------------------
    def use_head(self, model: int | str) -> None:
        """Copy one task's own head into the working model (heads kept separate)."""
        if self.plan.heads_merged:
            raise ConfigError("heads are merged (one label space); there is no task head to pick")
        i = self.genome.model_index(model)
        name = self.model_names[i]
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for pname, tensor in self.task_heads[name].items():
                p = params[pname]
                if p.shape == tensor.shape:
                    p.copy_(tensor)
                else:  # another label count: swap storage, keep the module consistent
                    p.data = tensor.to(self.model_dtype, copy=True)
                    owner = self.model.get_submodule(pname.rpartition(".")[0])
                    if isinstance(owner, nn.Linear) and pname.endswith("weight"):
                        owner.out_features = tensor.shape[0]
        config = self.checkpoints.models[i].config
        labels = label_space(config)
        if labels:
            self.model.config.id2label = dict(enumerate(labels))
            self.model.config.label2id = {v: k for k, v in enumerate(labels)}
        self.active_head = name
