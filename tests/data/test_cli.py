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
