"""How close does ``MergeEngine.apply`` get to memory bandwidth, and how much faster is it than
the naive path (per-tensor Python loop + ``load_state_dict``)?

For each model size, dtype and granularity this builds random checkpoints (base + N
fine-tuned, no download), then times, in the same run and on the same device:

- copy:  ``dst.copy_(src)`` of one model's bytes (2 x model bytes moved);
- apply: ``engine.apply(c)`` moving (N + 2) x model bytes (N models and the base read, one
  output written); for ``float32>bfloat16`` (float32 rows into a bfloat16 working model, the
  bfloat16 evaluation path of a study) (N + 1) float32 rows read and one bfloat16 output;
- naive: ``theta = base + sum_i c_i * tau_i`` per tensor from a dict of task vectors, then
  ``model.load_state_dict``.

Prints GB/s of copy and apply, their ratio (goal >= 0.7 on CPU), and the naive/apply speedup.

    python benchmarks/merge_bandwidth.py                       # MiniLM-size and ~135M, CPU
    python benchmarks/merge_bandwidth.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from evolver_opt.merge import MergeEngine


def _configs() -> dict:
    import transformers as tf

    return {
        # a smoke size (benchmarks/gpu_run.py --smoke): 0.2M parameters
        "tiny": (
            tf.BertModel,
            tf.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128),
        ),
        # all-MiniLM-L6-v2's shape: 22.7M parameters
        "minilm": (
            tf.BertModel,
            tf.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                          num_attention_heads=12, intermediate_size=1536),
        ),
        # SmolLM2-135M's shape (Llama, tied embeddings): 134.5M parameters
        "large": (
            tf.LlamaForCausalLM,
            tf.LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                           tie_word_embeddings=True),
        ),
    }  # fmt: skip


def build_checkpoints(root: Path, size: str, n_models: int) -> tuple[Path, list[Path]]:
    """Save a random base and ``n_models`` perturbed copies (safetensors) under ``root``."""
    cls, cfg = _configs()[size]
    torch.manual_seed(0)
    model = cls(cfg)
    model.save_pretrained(root / "base")
    dirs = []
    for i in range(n_models):
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen), alpha=0.01)
        dirs.append(root / f"ft{i}")
        model.save_pretrained(dirs[-1])
    return root / "base", dirs


def _time(fns: list, reps: int, device: torch.device) -> list[float]:
    """Median seconds of each function; runs alternate so load changes hit all alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns * 2:  # warm-up
        fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def naive_merge(engine: MergeEngine, base: dict, taus: list[dict], c: np.ndarray) -> None:
    """The path the engine replaces: a Python loop over tensors, then ``load_state_dict``."""
    state = {}
    groups = {s.name: s.group for s in engine.slots()}
    for name, b in base.items():
        merged = b.clone()
        for i, tau in enumerate(taus):
            merged.add_(tau[name], alpha=float(c[i, groups[name]]))
        state[name] = merged
    engine.model.load_state_dict(state, strict=False)


def bench(engine: MergeEngine, reps: int, naive_reps: int) -> dict:
    """Copy, apply and naive timings for one engine."""
    device, out = engine.device, engine.output
    src = engine.stacked[0].clone()  # copy_ in the rows' dtype: the bandwidth reference
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()
    moved = (engine.n_models + 1) * nbytes + out.numel() * out.element_size()
    c = np.random.default_rng(0).uniform(0, 1, (engine.n_models, engine.n_groups))
    t_copy, t_apply = _time([lambda: dst.copy_(src), lambda: engine.apply(c)], reps, device)
    slots = list(engine.slots())
    base = {s.name: s.base.clone() for s in slots}
    taus = [{s.name: (s.models[i] - s.base) for s in slots} for i in range(engine.n_models)]
    t_naive, t_apply2 = _time(
        [lambda: naive_merge(engine, base, taus, c), lambda: engine.apply(c)], naive_reps, device
    )
    copy_gbs = 2 * nbytes / t_copy / 1e9
    apply_gbs = moved / t_apply / 1e9
    return {
        "params": out.numel(),
        "groups": engine.n_groups,
        "copy_ms": 1e3 * t_copy,
        "apply_ms": 1e3 * t_apply,
        "naive_ms": 1e3 * t_naive,
        "copy_GBps": copy_gbs,
        "apply_GBps": apply_gbs,
        "ratio": apply_gbs / copy_gbs,
        "speedup_vs_naive": t_naive / t_apply2,
    }


def peak_memory(base: Path, dirs: list[Path], granularity: str) -> dict:
    """Peak RSS growth of ``from_dirs`` + 20 applies in a fresh process (Linux), in model sizes."""
    code = f"""
import resource, numpy as np, torch
from evolver_opt.merge import MergeEngine
import transformers
# imports and library set-up happen before the baseline: the model class, BLAS
cfg = transformers.AutoConfig.from_pretrained({str(dirs[0])!r})
getattr(transformers, cfg.architectures[0])
torch.mv(torch.ones(4, 8).t(), torch.ones(4))
# current RSS now (KiB), compared with the peak (ru_maxrss, KiB) later
before = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
e = MergeEngine.from_dirs({str(base)!r}, {[str(d) for d in dirs]!r}, granularity={granularity!r})
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(20):
    e.apply(np.random.default_rng(0).uniform(size=(e.n_models, e.n_groups)))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, loaded, after, e.output.numel() * e.output.element_size())
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, loaded, after, model = (int(x) for x in res.stdout.split()[-4:])
    return {
        "model_MB": model / 1e6,
        "peak_load_models": (loaded - before) * 1024 / model,
        "peak_after_applies_models": (after - before) * 1024 / model,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="minilm,large")
    parser.add_argument(
        "--dtypes",
        default="float32,bfloat16,float32>bfloat16",
        help="row dtypes; ROWS>MODEL writes ROWS rows into a MODEL-dtype working model",
    )
    parser.add_argument("--granularities", default="model,layer,tensor")
    parser.add_argument("--models", type=int, default=3, help="fine-tuned models N")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--naive-reps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS (CPU)")
    args = parser.parse_args()

    device = torch.device(args.device)
    rows = []
    header = (f"{'size':7} {'dtype':17} {'gran':7} {'params':>11} {'groups':>6} {'copy GB/s':>9} "
              f"{'apply GB/s':>10} {'ratio':>6} {'apply ms':>9} {'naive ms':>9} {'speedup':>8}")  # fmt: skip
    print(
        f"device={device} threads={torch.get_num_threads()} N={args.models} torch={torch.__version__}"
    )
    print(header)
    for size in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            base, dirs = build_checkpoints(Path(tmp), size, args.models)
            if args.memory:
                mem = peak_memory(base, dirs, "layer")
                rows.append({"size": size, "memory": mem})
                print(f"{size}: peak RSS growth loading {mem['peak_load_models']:.2f} x model bytes "
                      f"({mem['model_MB']:.0f} MB), after 20 applies "
                      f"{mem['peak_after_applies_models']:.2f} x (N + 2 = {args.models + 2})")  # fmt: skip
            for dtype_name in args.dtypes.split(","):
                rows_name, _, model_name = dtype_name.partition(">")
                dtype = getattr(torch, rows_name)
                model_dtype = getattr(torch, model_name) if model_name else None
                for gran in args.granularities.split(","):
                    engine = MergeEngine.from_dirs(
                        base, dirs, granularity=gran, device=device, dtype=dtype,
                        model_dtype=model_dtype,
                    )  # fmt: skip
                    r = {"size": size, "dtype": dtype_name, "granularity": gran}
                    r |= bench(engine, args.reps, args.naive_reps)
                    rows.append(r)
                    print(f"{size:7} {dtype_name:17} {gran:7} {r['params']:>11,} {r['groups']:>6} "
                          f"{r['copy_GBps']:>9.1f} {r['apply_GBps']:>10.1f} {r['ratio']:>6.2f} "
                          f"{r['apply_ms']:>9.2f} {r['naive_ms']:>9.1f} "
                          f"{r['speedup_vs_naive']:>7.1f}x", flush=True)  # fmt: skip
                    del engine
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
