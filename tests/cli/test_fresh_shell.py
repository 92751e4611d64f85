"""What a newcomer meets from a fresh clone (issue 29, item 4): the demo's last command runs in
a fresh shell, and the README and the help stand alone."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from evolver_opt.cli import main
from evolver_opt.cli._shared import program

ROOT = Path(__file__).resolve().parents[2]


def _script(folder: Path) -> Path:
    script = folder / "bin" / "evolver-opt"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    return script


def test_program_in_a_venv_is_the_scripts_path(tmp_path, monkeypatch):
    script = _script(tmp_path / ".venv")
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    monkeypatch.setattr(sys, "prefix", str(tmp_path / ".venv"))
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.defpath}")  # even when active
    monkeypatch.chdir(tmp_path)
    assert program() == ".venv/bin/evolver-opt"
    monkeypatch.chdir(tmp_path / ".venv" / "bin")
    assert program() == "./evolver-opt"  # a path the shell runs, not a name it looks up
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert program() == str(script)


def test_program_installed_on_the_path_is_its_name(tmp_path, monkeypatch):
    script = _script(tmp_path / "usr")
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)  # not a virtual environment
    monkeypatch.setenv("PATH", str(script.parent))
    assert program() == "evolver-opt"
    monkeypatch.setenv("PATH", os.defpath)  # not on a fresh shell's PATH: the path
    assert program() == str(script)


def test_the_demos_last_command_runs_in_a_fresh_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    storage = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(
        main, ["demo", "--synthetic", "--budget", "4", "--groups", "2", "--storage", storage]
    )
    assert result.exit_code == 0, result.output
    last = result.output.rstrip().splitlines()[-1]
    command = shlex.split(last.split("(")[0])
    assert command[1:] == ["dashboard", "--storage", storage]
    fresh = {"PATH": os.defpath, "HOME": str(tmp_path)}  # no venv activated
    shell = f"{shlex.join(command[:2])} --help"
    done = subprocess.run(
        ["sh", "-c", shell], cwd=ROOT, env=fresh, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "optuna-dashboard" in done.stdout


def _help_texts() -> dict[str, str]:
    texts = {"": CliRunner().invoke(main, ["--help"]).output}
    for name in main.list_commands(None):  # type: ignore[arg-type]
        texts[name] = CliRunner().invoke(main, [name, "--help"]).output
    for group in ("data", "zoo"):
        for sub in ("prepare", "list") if group == "data" else ("build", "matrix"):
            texts[f"{group} {sub}"] = CliRunner().invoke(main, [group, sub, "--help"]).output
    return texts


def test_readme_docs_and_help_point_at_nothing_outside_the_repository():
    pages = {p.relative_to(ROOT).as_posix(): p.read_text() for p in [ROOT / "README.md"]}
    pages |= {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "docs").glob("*.md")}
    pages |= {f"evolver-opt {k} --help": v for k, v in _help_texts().items()}
    for where, text in pages.items():
        assert "../shared" not in text and "DATA.md" not in text, where
    for link in re.findall(r"\]\(([^)#\s]+)", pages["README.md"]):
        if "://" not in link:
            assert (ROOT / link).exists(), f"README links to {link}, not in the repository"


def test_docs_data_describes_every_source_and_task():
    from evolver_opt.data.sources import CATALOGUE

    text = (ROOT / "docs" / "data.md").read_text()
    for source in CATALOGUE:
        assert f"`{source.spec}`" in text, source.spec
        for domain in source.domains:
            assert f"`{domain}`" in text, domain


def test_data_help_names_every_source_package_and_task():
    from evolver_opt.data.sources import CATALOGUE

    shown = " ".join(CliRunner().invoke(main, ["data", "--help"]).output.split())
    for source in CATALOGUE:
        assert source.package in shown, source.package
    assert "docs/data.md" in shown
    tasks = [d for s in CATALOGUE for d in s.domains]
    assert all(task in shown for task in tasks), tasks
