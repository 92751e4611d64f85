"""Do two studies started at once on the same cores keep their pace?

Starts ``evolver-opt run`` on a small real study alone, then two at once, then alone again,
and prints each study's trial rate beside the other relative to the solo rate, measured in one
run (issue 29, item 3; goal: at least 0.45x each on 2 cores, where each of the two gets about
half the cores). The study: three experts of the eight-task zoo (``studies/multitask-8.toml``'s
``[zoo]``, built on first use), per-layer coefficients, random sampler, a stratified dev
sample per task, float32, no pruner; every process has its own SQLite storage.

Modes (``--modes``; each measures its own solo rates):

- ``auto``: the commands' default, ``--threads auto`` (the cores this process may use; idle
  OpenMP threads sleep, ``OMP_WAIT_POLICY=PASSIVE``);
- ``spin``: what every command did before: one thread per core and libgomp's default wait
  (threads spin about 300,000 times at each barrier before sleeping: ``GOMP_SPINCOUNT=300000``,
  ``--threads <cores>``), the setting that measured about 0.11x on 2 shared cores.

A rate counts the trials completed after a process's first completion, over the time to its
last; for the pair, only the window when both processes were running trials counts. The solo
rate is the mean of a solo run just before the pair and one just after (study A, then B: the
same study with another seed). The load average after each phase is printed: on a shared
machine the solo rates are slowed too. Linux's autogroup scheduling gives every session one
share of the cores: the processes started here share one session, as two runs started from
one shell do, so under other sessions' load the pair splits what one solo run had.

    python benchmarks/concurrent_studies.py                       # auto and spin, 24 trials
    python benchmarks/concurrent_studies.py --modes auto --trials 40 --dev-per-split 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZOO_STUDY = ROOT / "studies" / "multitask-8.toml"
EXPERTS = ("trec", "stackoverflow", "bbc-news")
CLI = "import sys; from evolver_opt.cli import main; sys.exit(main(prog_name='evolver-opt'))"


@dataclass
class Timeline:
    """When one process's completed trials finished (seconds since the epoch, sorted)."""

    label: str
    completes: list[float]

    def rate(self, start: float | None = None, end: float | None = None) -> float:
        """Trials per second completed after ``start`` up to ``end`` (default: this process's
        first and last completion)."""
        start = self.completes[0] if start is None else start
        end = self.completes[-1] if end is None else end
        done = sum(start < t <= end for t in self.completes)
        if end <= start or done == 0:
            raise SystemExit(f"{self.label}: no trials completed between its window's ends")
        return done / (end - start)


def study_toml(experts: tuple[str, ...], dev_per_split: int) -> str:
    """A small study over ``experts`` of the eight-task zoo (its ``[zoo]`` table reused, so the
    cached experts are found by their hash)."""
    zoo_text = ZOO_STUDY.read_text()
    zoo = zoo_text[zoo_text.index("\n[zoo]") :]
    names = "[" + ", ".join(f'"{e}"' for e in experts) + "]"
    return (
        '[study]\nname = "concurrent"\ngranularity = "layer"\nheads = "separate"\n'
        'bounds = [0.0, 1.0]\nform = "task_arithmetic"\nseed_merges = ["average"]\n'
        f"zoo_experts = {names}\ndev = {names}\ntest_in_domain = {names}\n"
        f"n_trials = 1000\ndev_per_split = {dev_per_split}\ntest_per_split = 50\n\n"
        '[study.evaluation]\nbatch_size = 64\nmax_length = 64\nprecision = "fp32"\n' + zoo
    )


def _env(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(ROOT)
    if mode == "spin":
        env["GOMP_SPINCOUNT"] = "300000"  # libgomp's spin when OMP_WAIT_POLICY is not set
    return env


def _threads_flag(mode: str) -> list[str]:
    if mode == "spin":
        return ["--threads", str(len(os.sched_getaffinity(0)))]
    return []  # the default: --threads auto


def start(label: str, study: Path, folder: Path, mode: str, trials: int, seed: int):
    """``evolver-opt run`` for one study in its own storage; returns (process, url, log)."""
    url = f"sqlite:///{folder / f'{label}.db'}"
    log = (folder / f"{label}.log").open("w")
    command = [sys.executable, "-c", CLI, "run", str(study), "--sampler", "random"]
    command += ["--n-trials", str(trials), "--seed", str(seed), "--storage", url]
    command += ["--study-name", label, "--no-progress", *_threads_flag(mode)]
    process = subprocess.Popen(command, env=_env(mode), stdout=log, stderr=subprocess.STDOUT)
    return process, url, log


def timeline(label: str, url: str) -> Timeline:
    """The completion times of ``label``'s COMPLETE trials in ``url``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=label, storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    times = sorted(_epoch(t.datetime_complete) for t in done)
    if len(times) < 3:
        raise SystemExit(f"{label}: only {len(times)} trials completed; raise --trials")
    return Timeline(label, times)


def _epoch(when: dt.datetime) -> float:
    return when.timestamp()  # naive local time, as Optuna stores it


def run_phase(labels: list[str], study: Path, folder: Path, mode: str, trials: int):
    """Start one process per label at once, wait for all, return their timelines."""
    started = [  # study A has seed 0, B seed 1, alone or in the pair
        (label, *start(label, study, folder, mode, trials, seed=int(label.endswith("B"))))
        for label in labels
    ]
    for label, process, _, log in started:
        code = process.wait()
        log.close()
        if code != 0:
            tail = (folder / f"{label}.log").read_text()[-3000:]
            raise SystemExit(f"{label} ({mode}) exited {code}:\n{tail}")
    return [timeline(label, url) for label, _, url, _ in started]


def overlap(lines: list[Timeline]) -> tuple[float, float]:
    """The window when every process was completing trials: (start, end)."""
    return max(t.completes[0] for t in lines), min(t.completes[-1] for t in lines)


def loads() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(mode: str, study: Path, folder: Path, trials: int) -> dict:
    """Study A alone, then A and B at once, then B alone; prints and returns the ratios.

    A and B are the same study with another seed (random sampler: a trial costs the same
    whatever its coefficients), so both solo runs measure the solo rate; each study's pair
    rate is divided by their mean, so load that drifts during the run weighs on both sides."""
    print(f"\nmode {mode}: {describe(mode)}", flush=True)
    result: dict = {"mode": mode, "load_before": loads()}
    (before,) = run_phase([f"{mode}-solo-A"], study, folder, mode, trials)
    print(f"  solo A (before): {before.rate():.3f} trials/s   (load {loads()})", flush=True)
    pair = run_phase([f"{mode}-pair-A", f"{mode}-pair-B"], study, folder, mode, trials)
    window = overlap(pair)
    rates = [line.rate(*window) for line in pair]
    print(f"  pair A and B at once: {rates[0]:.3f} and {rates[1]:.3f} trials/s over the "
          f"{window[1] - window[0]:.0f} s both ran trials   (load {loads()})", flush=True)  # fmt: skip
    (after,) = run_phase([f"{mode}-solo-B"], study, folder, mode, trials)
    print(f"  solo B (after): {after.rate():.3f} trials/s   (load {loads()})", flush=True)
    solo = (before.rate() + after.rate()) / 2
    result["solo"] = {"A": before.rate(), "B": after.rate(), "mean": solo}
    for label, rate in zip(("A", "B"), rates, strict=True):
        result[label] = {"pair": rate, "ratio": rate / solo}
        print(f"  {label}: {rate / solo:.2f}x the solo rate beside the other", flush=True)
    result["load_after"] = loads()
    return result


def describe(mode: str) -> str:
    cores = len(os.sched_getaffinity(0))
    if mode == "spin":
        return f"--threads {cores} each, OpenMP threads spin at barriers (GOMP_SPINCOUNT=300000)"
    return "--threads auto (the default) each, OpenMP threads sleep when idle"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="auto,spin", help="comma-separated: auto, spin")
    parser.add_argument("--trials", type=int, default=24, help="trials per study")
    parser.add_argument("--dev-per-split", type=int, default=48, help="dev examples per task")
    parser.add_argument("--experts", default=",".join(EXPERTS), help="of the eight-task zoo")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - {"auto", "spin"})
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from auto, spin")
    start_time = time.time()
    print(
        f"{len(os.sched_getaffinity(0))} cores for this process ({os.cpu_count()} on the "
        f"machine); load average before: {loads()}"
    )
    with tempfile.TemporaryDirectory(prefix="concurrent-studies-") as tmp:
        folder = Path(tmp)
        study = folder / "study.toml"
        study.write_text(study_toml(tuple(args.experts.split(",")), args.dev_per_split))
        results = [measure(mode, study, folder, args.trials) for mode in modes]
    print(f"\n{time.time() - start_time:.0f} s in all; goal: every pair ratio >= 0.45")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
