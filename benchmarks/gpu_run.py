"""The whole GPU benchmark in one run, into one folder: the ``gpu`` tests, the merge bandwidth
(torch path and the fused Triton kernel, as a ratio to ``copy_``) and the end-to-end trials per
second of a study with each trial's breakdown (ask, suggest, merge, eval, tell).

It installs nothing and downloads nothing. Steps that cannot run (no triton, a package
missing, the zoo not cached) are recorded with the reason and the run goes on; ``results.json``
is rewritten after every step, so a run cut short still leaves what it measured.

- merge bandwidth: random checkpoints of all-MiniLM-L6-v2's shape and of SmolLM2-135M's
  (``merge_bandwidth.py``'s builders, N = 4), float32, bfloat16 and float32 rows into a
  bfloat16 model, at model, layer and tensor granularity;
- end to end: the eight-task study (``studies/multitask-8.toml``, 100 dev examples per task)
  when its data and zoo are cached here, else the same study shape on synthetic data with
  random MiniLM-shaped experts (eight tasks, eight heads of the real label counts): the
  throughput is the same, the scores mean nothing. Evolver sampler, SQLite storage on this
  disk, each evaluation mode (``$EVOLVER_OPT_CUDA_EVAL``: eager, device, graphs) in turn.

    python benchmarks/gpu_run.py OUT                               # a CUDA machine, < 10 min
    python benchmarks/gpu_run.py OUT --device cpu --smoke          # the same steps, tiny, CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # evolver_opt and tests/ without an install
sys.path.insert(0, str(ROOT / "benchmarks"))

DTYPES = ("float32", "bfloat16", "float32>bfloat16")
GRANULARITIES = ("model", "layer", "tensor")
EIGHT_TASKS = ("banking77", "stackoverflow", "yahoo-answers", "trec", "sms-spam", "sarcasm",
               "bbc-news", "vader-movies")  # fmt: skip
MINILM_DIMS = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
               "intermediate_size": 1536}  # fmt: skip
TINY_DIMS = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64}  # fmt: skip


def log(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    """Environment variables set inside the block, restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def failure(exc: BaseException) -> dict:
    """A step that could not run: the error and, for a missing package, its name."""
    out = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=6)}
    if isinstance(exc, ImportError) and exc.name:
        out["missing_module"] = exc.name
    return out


# -- environment ---------------------------------------------------------------------------
def environment(device: str) -> dict:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as exc:
        info["triton"] = f"not installed ({exc})"
    info["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET", "")
    return info


# -- the gpu tests -------------------------------------------------------------------------
def gpu_tests(out: Path, timeout_s: float) -> dict:
    """``pytest -m gpu`` over the test files that hold gpu-marked tests; the log goes to
    ``gpu-tests.txt``. Without a CUDA device they skip, and that is what is recorded."""
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "mark.gpu" in p.read_text()
    )
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    start = time.perf_counter()
    try:
        res = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        text, rc = res.stdout + res.stderr, res.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        text, rc = partial + f"\n(timed out after {timeout_s:.0f} s)", None
    (out / "gpu-tests.txt").write_text(text)
    counts = {}
    for line in reversed(text.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed)", line)
        if found:
            counts = {kind: int(n) for n, kind in found}
            break
    return {"command": " ".join(cmd[1:]), "files": files, "returncode": rc, "counts": counts,
            "seconds": round(time.perf_counter() - start, 1), "log": "gpu-tests.txt"}  # fmt: skip


# -- merge bandwidth -----------------------------------------------------------------------
def _kernel_rows(c: Any) -> Any:
    """``(n_groups, N + 1)`` kernel coefficients of an ``(N, n_groups)`` merge."""
    import numpy as np

    rows = np.empty((c.shape[1], c.shape[0] + 1))
    rows[:, 0] = 1.0 - c.sum(axis=0)
    rows[:, 1:] = c.T
    return rows


def bandwidth_row(base: Path, dirs: list[Path], dtype_name: str, gran: str, device: str,
                  reps: int) -> dict:  # fmt: skip
    """copy_, the torch path and the Triton kernel on one engine; GB/s and ratio to copy_."""
    import merge_bandwidth as mb
    import numpy as np
    import torch

    from evolver_opt.errors import ConfigError
    from evolver_opt.merge import MergeEngine
    from evolver_opt.merge.kernels import GroupMatVec
    from evolver_opt.merge.triton_merge import interpreting

    rows_name, _, model_name = dtype_name.partition(">")
    with env(EVOLVER_OPT_TRITON="0"):  # the engine's own kernel: the torch path
        engine = MergeEngine.from_dirs(
            base, dirs, granularity=gran, device=device, dtype=getattr(torch, rows_name),
            model_dtype=getattr(torch, model_name) if model_name else None,
        )  # fmt: skip
    dev = torch.device(device)
    src = engine.stacked[0].clone()
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()
    moved = (engine.n_models + 1) * nbytes + engine.output.numel() * engine.output.element_size()
    coef = _kernel_rows(np.random.default_rng(0).uniform(0, 1, (engine.n_models, engine.n_groups)))
    torch_path = engine._kernel
    row: dict[str, Any] = {
        "dtype": dtype_name, "granularity": gran, "params": engine.output.numel(),
        "groups": engine.n_groups, "torch_mode": torch_path.mode,
    }  # fmt: skip
    fns: list[Callable[[], Any]] = [lambda: dst.copy_(src), lambda: torch_path(coef)]
    try:
        fused = GroupMatVec(
            engine.stacked, engine.output, engine.layout.group_spans, backend="triton"
        )
        fns.append(lambda: fused(coef))
        row["triton_blocks"] = fused._triton.n_blocks
        row["triton_backend"] = "interpreter" if interpreting() else "compiled"
    except ConfigError as exc:
        fused, row["triton"] = None, f"unavailable: {exc}"
    times = mb._time(fns, reps, dev)
    copy_gbs = 2 * nbytes / times[0] / 1e9
    row |= {"copy_ms": 1e3 * times[0], "copy_GBps": copy_gbs, "torch_ms": 1e3 * times[1],
            "torch_GBps": moved / times[1] / 1e9}  # fmt: skip
    row["torch_ratio"] = row["torch_GBps"] / copy_gbs
    if fused is not None:
        row |= {"triton_ms": 1e3 * times[2], "triton_GBps": moved / times[2] / 1e9}
        row["triton_ratio"] = row["triton_GBps"] / copy_gbs
        row["triton_speedup"] = times[1] / times[2]
        torch_path(coef)
        ref = engine.output.clone()
        fused(coef)
        row["max_abs_diff"] = float((engine.output.float() - ref.float()).abs().max())
        pick = np.zeros((engine.n_models, engine.n_groups))
        pick[1] = 1.0  # the second fine-tuned model alone: row 2 of the stack, exactly
        fused(_kernel_rows(pick))
        row["one_hot_exact"] = bool(torch.equal(engine.output, engine.stacked[2].to(ref.dtype)))
    del engine
    return row


def merge_bandwidth(sizes: list[str], device: str, n_models: int, reps: int,
                    deadline: float, results: list) -> None:  # fmt: skip
    import merge_bandwidth as mb

    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            base, dirs = mb.build_checkpoints(Path(tmp), size, n_models)
            log(f"  {size}: {n_models} random checkpoints in {time.perf_counter() - start:.0f} s")
            for dtype_name in DTYPES:
                for gran in GRANULARITIES:
                    if time.perf_counter() > deadline:
                        results.append({"size": size, "dtype": dtype_name, "granularity": gran,
                                        "skipped": "out of time"})  # fmt: skip
                        continue
                    try:
                        r = {"size": size} | bandwidth_row(base, dirs, dtype_name, gran, device,
                                                           reps)  # fmt: skip
                    except Exception as exc:  # noqa: BLE001 - record and go on
                        r = {"size": size, "dtype": dtype_name, "granularity": gran} | failure(exc)
                    results.append(r)
                    log("  " + bandwidth_line(r))


def bandwidth_line(r: dict) -> str:
    head = f"{r['size']:7} {r['dtype']:17} {r['granularity']:7}"
    if "copy_GBps" not in r:
        return f"{head} {r.get('skipped') or r.get('error')}"
    fused = (
        f"triton ({r['triton_backend']}) {r['triton_GBps']:8.3g} GB/s ratio "
        f"{r['triton_ratio']:5.2g} "
        f"x{r['triton_speedup']:.2f} vs torch, max diff {r['max_abs_diff']:.1e}"
        if "triton_GBps" in r
        else r.get("triton", "")
    )
    return (f"{head} {r['params']:>11,} params {r['groups']:>4} groups  copy {r['copy_GBps']:8.1f}"
            f"  torch {r['torch_GBps']:8.1f} ratio {r['torch_ratio']:5.2f}  {fused}")  # fmt: skip


# -- end to end ----------------------------------------------------------------------------
def synthetic_world(root: Path, dims: dict, n_examples: int, tasks: tuple[str, ...]) -> dict:
    """Prepared synthetic data for every domain and a random base with one expert per task
    (its own head, the task's label names), BERT of ``dims``, the tests' tiny tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from evolver_opt.data.pipeline import DOMAINS
    from tests.data.tiny_data import write_tiny_data
    from tests.evaluation.tiny import tiny_tokenizer

    write_tiny_data(root / "data", n=n_examples)
    tokenizer = tiny_tokenizer()
    common = {"vocab_size": 64, "max_position_embeddings": 128, **dims}
    torch.manual_seed(0)
    base = BertModel(BertConfig(**common)).eval()
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    experts = {}
    for i, task in enumerate(tasks):
        labels = DOMAINS[task][1]
        cfg = BertConfig(**common, id2label=dict(enumerate(labels)),
                         label2id={n: k for k, n in enumerate(labels)})  # fmt: skip
        model = BertForSequenceClassification(cfg).eval()
        model.bert.load_state_dict(base.state_dict())
        gen = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        model.save_pretrained(root / task)
        tokenizer.save_pretrained(root / task)
        experts[task] = root / task
    return {"data_dir": root / "data", "base": root / "base", "experts": experts}


def study_toml(path: Path, world: dict, device: str, dev_per_split: int, n_trials: int) -> Path:
    """The eight-task study's settings (multitask-8.toml) over ``world``'s checkpoints."""
    experts = ", ".join(f'{{name = "{d}", path = "{p}"}}' for d, p in world["experts"].items())
    tasks = json.dumps(list(world["experts"]))
    path.write_text(f"""[study]
name = "gpu-e2e"
base = "{world["base"]}"
experts = [{experts}]
granularity = "layer"
heads = "separate"
bounds = [0.0, 1.0]
form = "task_arithmetic"
seed_merges = ["average"]
dev = {tasks}
dev_per_split = {dev_per_split}
n_trials = {n_trials}

[study.evaluation]
batch_size = 64
max_length = 64
device = "{device}"
precision = "auto"

[study.pruner]
name = "median"
stages = [0.25, 0.5, 1.0]
options = {{ n_startup_trials = 5 }}
""")
    return path


def real_study(device: str, dev_per_split: int) -> tuple[Any, Path | None, str | None]:
    """multitask-8 with ``dev_per_split`` on ``device``, or why it cannot run here."""
    from evolver_opt.data.pipeline import is_prepared
    from evolver_opt.paths import data_dir
    from evolver_opt.search.config import load_config, override_config
    from evolver_opt.zoo import base_checkpoint

    config = load_config(ROOT / "studies" / "multitask-8.toml")
    evaluation = {**config.evaluation.model_dump(mode="json"), "device": device}
    config = override_config(
        config, {"dev_per_split": dev_per_split, "evaluation": evaluation}, source="gpu_run"
    )
    if not is_prepared(data_dir(), plan=None):
        return config, None, f"data not prepared in {data_dir()}"
    try:
        folders = [base_checkpoint(config.zoo), *(e.path for e in config.expert_specs())]
    except Exception as exc:  # noqa: BLE001 - the base package missing, say
        return config, None, f"zoo base unavailable ({exc})"
    missing = [str(p) for p in folders if not any(Path(p).glob("*.safetensors"))]
    if missing:
        return (
            config,
            None,
            f"zoo not cached ({len(missing)} checkpoints missing, e.g. {missing[0]})",
        )
    return config, data_dir(), None


def timed_trials(setup: Any, url: str, name: str, n_trials: int, device: str) -> dict:
    """Run the start points untimed, then ``n_trials`` Evolver trials through ask /
    objective / tell, timing each part; merge and eval from the trial's user attributes."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from evolver_opt.search.objective import MergeObjective
    from evolver_opt.search.runner import open_study

    n_start = len(setup.initial_points())
    study = open_study(setup.config, setup.initial_points(), sampler="evolver", seed=0,
                       storage=url, study_name=name, budget=n_start + n_trials,
                       heartbeat_interval=None, precision=setup.precision)  # fmt: skip
    engine = setup.engine
    if device == "cuda":  # a launch returns at once: wait, so merge_s is the merge's time
        plain_apply = engine.apply

        def apply(c: Any) -> None:
            plain_apply(c)
            torch.cuda.synchronize()

        engine.apply = apply
    objective = MergeObjective(setup)
    parts: dict[str, list[float]] = {k: [] for k in ("ask", "suggest", "merge", "eval", "tell")}
    states, seen = [], []
    start = 0.0
    try:
        for i in range(n_start + n_trials):
            if i == n_start:
                start = time.perf_counter()
            t0 = time.perf_counter()
            trial = study.ask()
            t1 = time.perf_counter()
            value, state = None, TrialState.COMPLETE
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            t2 = time.perf_counter()
            attrs = trial.user_attrs
            study.tell(trial, value, state=state)
            t3 = time.perf_counter()
            if i < n_start:
                continue
            merge_s, eval_s = attrs.get("merge_s", 0.0), attrs.get("eval_s", 0.0)
            parts["ask"].append(t1 - t0)
            parts["merge"].append(merge_s)
            parts["eval"].append(eval_s)
            parts["suggest"].append(max(0.0, t2 - t1 - merge_s - eval_s))
            parts["tell"].append(t3 - t2)
            states.append(state.name)
            seen.append(attrs.get("examples_seen", 0))
        wall = time.perf_counter() - start
    finally:
        if device == "cuda":
            del engine.apply
    return {
        "trials": n_trials,
        "start_points": n_start,
        "wall_s": round(wall, 3),
        "trials_per_s": n_trials / wall,
        "ms_per_trial": {k: 1e3 * statistics.fmean(v) for k, v in parts.items()},
        "pruned": states.count("PRUNED"),
        "examples_seen_mean": statistics.fmean(seen),
        "best_dev": study.best_value,
    }


def end_to_end(device: str, smoke: bool, work: Path, n_trials: int) -> dict:
    """Trials per second of the eight-task study (or its synthetic stand-in) per eval mode."""
    from evolver_opt.evaluation.cuda_graphs import ENV
    from evolver_opt.search.config import load_config
    from evolver_opt.search.objective import build_setup, with_dev_sample

    dev_per_split = 20 if smoke else 100
    config, data_dir, why = (None, None, "smoke run") if smoke else real_study(device, 100)
    out: dict[str, Any] = {}
    if why is not None:
        start = time.perf_counter()
        dims, n = (TINY_DIMS, 140) if smoke else (MINILM_DIMS, 700)  # dev = 15% of n
        world = synthetic_world(work / "world", dims, n, EIGHT_TASKS)
        path = study_toml(work / "study.toml", world, device, dev_per_split, n_trials)
        config, data_dir = load_config(path), world["data_dir"]
        out["study"] = (
            f"synthetic eight-task world ({why}): random BERT experts {dims} with a 64-token "
            "vocabulary (MiniLM's body; its 30522-token embedding is not merged here)"
        )
        out["world_s"] = round(time.perf_counter() - start, 1)
    else:
        out["study"] = "studies/multitask-8.toml (cached zoo and data)"
    out["dev_per_split"] = dev_per_split
    start = time.perf_counter()
    setup = build_setup(config, data_dir=data_dir)
    out["setup_s"] = round(time.perf_counter() - start, 1)
    out["precision"] = setup.precision.summary() if setup.precision else None
    out["merge_kernel"] = setup.engine.kernel_mode
    out["params"] = len(setup.param_names)
    url = f"sqlite:///{work / 'e2e.db'}"
    modes = ("eager", "device", "graphs") if device == "cuda" else ("eager",)
    out["modes"] = {}
    for mode in modes:
        with env(**{ENV: mode}):
            scored = with_dev_sample(setup, dev_per_split, data_dir=data_dir)
        try:
            out["modes"][mode] = timed_trials(scored, url, f"e2e-{mode}", n_trials, device)
        except Exception as exc:  # noqa: BLE001 - record and go on
            out["modes"][mode] = failure(exc)
        log("  " + e2e_line(mode, out["modes"][mode]))
    return out


def e2e_line(mode: str, r: dict) -> str:
    if "trials_per_s" not in r:
        return f"{mode:7} {r.get('error')}"
    ms = r["ms_per_trial"]
    return (f"{mode:7} {r['trials_per_s']:7.1f} trials/s ({r['trials']} trials, {r['pruned']} "
            f"pruned); ms per trial: ask {ms['ask']:.1f}, suggest {ms['suggest']:.1f}, merge "
            f"{ms['merge']:.2f}, eval {ms['eval']:.1f}, tell {ms['tell']:.1f}")  # fmt: skip


# -- report --------------------------------------------------------------------------------
def _table(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    """A markdown table; a short row (a step that failed) is padded with empty cells."""
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    return lines + ["| " + " | ".join(r + [""] * (len(columns) - len(r))) + " |" for r in rows]


def _bandwidth_md(rows: list[dict]) -> list[str]:
    columns = ("size", "dtype", "granularity", "params", "groups", "copy_ GB/s", "torch GB/s",
               "torch ratio", "triton GB/s", "triton ratio", "triton / torch", "max diff",
               "one-hot exact")  # fmt: skip
    cells = []
    for r in rows:
        head = [r["size"], r["dtype"], r["granularity"]]
        if "copy_GBps" not in r:
            cells.append(head + [str(r.get("skipped") or r.get("error"))])
            continue
        head += [f"{r['params']:,}", str(r["groups"]), f"{r['copy_GBps']:.1f}",
                 f"{r['torch_GBps']:.1f}", f"{r['torch_ratio']:.2f}"]  # fmt: skip
        if "triton_GBps" not in r:
            cells.append(head + [r.get("triton", "")])
            continue
        cells.append(head + [f"{r['triton_GBps']:.3g} ({r['triton_backend']})",
                             f"{r['triton_ratio']:.2g}", f"{r['triton_speedup']:.2g}",
                             f"{r['max_abs_diff']:.1e}", str(r["one_hot_exact"])])  # fmt: skip
    return ["", "## Merge bandwidth (GB/s moved; ratio to `copy_`)", "", *_table(columns, cells)]


def _e2e_md(e2e: dict) -> list[str]:
    lines = ["", "## End to end (Evolver, SQLite, merge + eval)", ""]
    if "error" in e2e:
        return lines + [f"not run: {e2e['error']}"]
    lines.append(f"{e2e['study']}; {e2e['dev_per_split']} dev examples per task, "
                 f"{e2e['params']} coefficients, merge kernel `{e2e['merge_kernel']}`, "
                 f"setup {e2e['setup_s']} s; {e2e['precision']}")  # fmt: skip
    columns = ("eval mode", "trials/s", "trials", "pruned", "ask ms", "suggest+attrs ms",
               "merge ms", "eval ms", "tell ms", "examples seen")  # fmt: skip
    cells = []
    for mode, r in e2e["modes"].items():
        if "trials_per_s" not in r:
            cells.append([mode, str(r.get("error"))])
            continue
        ms = r["ms_per_trial"]
        cells.append([mode, f"{r['trials_per_s']:.1f}", str(r["trials"]), str(r["pruned"]),
                      *(f"{ms[k]:.1f}" for k in ("ask", "suggest")), f"{ms['merge']:.2f}",
                      *(f"{ms[k]:.1f}" for k in ("eval", "tell")),
                      f"{r['examples_seen_mean']:.0f}"])  # fmt: skip
    return lines + ["", *_table(columns, cells)]


def markdown(results: dict) -> str:
    lines = ["# GPU run", "", f"`{results['command']}`", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results.get("environment", {}).items()]
    tests = results.get("gpu_tests")
    if tests:
        lines += ["", "## `pytest -m gpu`", ""]
        if "error" in tests:
            lines.append(f"not run: {tests['error']}")
        else:
            counts = ", ".join(f"{n} {k}" for k, n in tests["counts"].items()) or "no summary"
            lines.append(f"return code {tests['returncode']}: {counts} in {tests['seconds']} s "
                         f"(log: {tests['log']})")  # fmt: skip
    if results.get("merge_bandwidth") is not None:
        lines += _bandwidth_md(results["merge_bandwidth"])
    if results.get("end_to_end"):
        lines += _e2e_md(results["end_to_end"])
    lines += ["", f"Step seconds: {results.get('seconds', {})}", ""]
    return "\n".join(lines)


def save(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (results.json, results.md)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="default: cuda when available")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the steps run")
    parser.add_argument("--skip", default="", help="comma list of steps: tests,bandwidth,e2e")
    parser.add_argument("--trials", type=int, default=None, help="timed trials per eval mode")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop adding rows after")
    args = parser.parse_args()
    begin = time.perf_counter()
    if args.device == "cpu" and args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # the kernel's path runs, interpreted
    import optuna
    import torch
    import transformers

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    args.out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                               "environment": environment(device), "seconds": {}}  # fmt: skip
    log(f"gpu_run: {results['environment']}")
    save(args.out, results)
    deadline = begin + args.budget_s

    steps: list[tuple[str, Callable[[], Any]]] = []
    if "tests" not in skip:
        steps.append(("gpu_tests", lambda: gpu_tests(args.out, timeout_s=240)))
    if "bandwidth" not in skip:
        rows: list = []
        results["merge_bandwidth"] = rows
        sizes = ["tiny"] if args.smoke else ["minilm", "large"]
        reps = 3 if args.smoke else 20
        steps.append(("merge_bandwidth",
                      lambda: merge_bandwidth(sizes, device, 4, reps, deadline - 120, rows)))  # fmt: skip
    if "e2e" not in skip:
        n = args.trials or (10 if args.smoke else 200)
        work = Path(tempfile.mkdtemp(prefix="gpu-run-"))  # the world and the SQLite study
        steps.append(("end_to_end", lambda: end_to_end(device, args.smoke, work, n)))
    for name, step in steps:
        log(f"== {name}")
        start = time.perf_counter()
        try:
            value = step()
        except Exception as exc:  # noqa: BLE001 - record and go on
            value = failure(exc)
            log(f"  failed: {value['error']}")
        if value is not None:
            results[name] = value
        results["seconds"][name] = round(time.perf_counter() - start, 1)
        if name == "gpu_tests":
            log(f"  return code {value.get('returncode')}: {value.get('counts') or value}")
        save(args.out, results)
    if "e2e" not in skip:
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"]["total"] = round(time.perf_counter() - begin, 1)
    save(args.out, results)
    log(f"wrote {args.out / 'results.json'} and results.md in {results['seconds']['total']} s")


if __name__ == "__main__":
    main()
