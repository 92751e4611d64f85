from __future__ import annotations

from click.testing import CliRunner

from evolver_opt.cli import main
from tests.data.tiny_data import write_tiny_data


def test_prepare_prints_the_size_table_and_is_idempotent(tmp_path):
    write_tiny_data(tmp_path)
    result = CliRunner().invoke(main, ["data", "prepare", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "already prepared" in result.output
    lines = result.output.splitlines()
    assert any(line.startswith("vader-movies") for line in lines)
    assert lines[-1].startswith("total")


def test_list_shows_every_task_with_label_count_and_split_sizes(tmp_path):
    from evolver_opt.data import DOMAINS

    manifest = write_tiny_data(tmp_path)
    result = CliRunner().invoke(main, ["data", "list", "--data-dir", str(tmp_path), "--labels"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line}
    for domain in DOMAINS:
        info = manifest["domains"][domain]
        sizes = [str(info["sizes"][s]) for s in ("train", "dev", "test")]
        assert rows[domain][1] == str(len(info["labels"])) and rows[domain][3:6] == sizes
    assert rows["banking77"][1] == "77" and rows["trec"][1] == "6"
    assert "sms-spam: ham, spam" in result.output


def test_list_without_prepared_data_lists_the_known_tasks(tmp_path):
    result = CliRunner().invoke(main, ["data", "list", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert "not prepared" in result.output and "evolver-opt data prepare" in result.output
    assert any(line.split()[:2] == ["yahoo-answers", "10"] for line in result.output.splitlines())
