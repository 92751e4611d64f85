"""What a run exposes: the dashboard listens on 127.0.0.1 only by default, and a storage
password never reaches the output, the logs or the study."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from click.testing import CliRunner

from evolver_opt.cli import main
from tests.reliability.conftest import CLI, child_env, run_args


def _listening(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: TCP_LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:  # IPv4, stored little-endian
                    found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # IPv6: four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _other_local_address() -> str | None:
    """An address of this machine that is not loopback (e.g. eth0's), if there is one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_dashboard_binds_loopback_only_by_default(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    optuna.create_study(study_name="s", storage=url)
    port = _free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [CLI, "dashboard", "--storage", url, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the dashboard never listened"
            time.sleep(0.1)
        assert _listening(port) == ["127.0.0.1"]  # not 0.0.0.0, not ::
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it serves on loopback
        other = _other_local_address()
        if other is not None:  # and is unreachable through the machine's other address
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((other, port), timeout=5).close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_storage_password_never_appears_in_output_logs_or_study(
    tiny_study, fresh_pg, study_env, caplog
):
    """A full `evolver-opt run` on PostgreSQL with a password in the URL (trust auth ignores it)."""
    password = "pw-7f3a-never-shown"
    direct = sqlalchemy.engine.make_url(fresh_pg)
    url = f"postgresql://postgres:{password}@{direct.host}:{direct.port}/{direct.database}"
    with caplog.at_level(logging.DEBUG):
        result = CliRunner().invoke(main, run_args(tiny_study, url, "s", 5))
    assert result.exit_code == 0, result.output
    assert "postgres:***@" in result.output  # the URL is named, redacted
    assert password not in result.output
    assert password not in caplog.text
    engine = sqlalchemy.create_engine(fresh_pg)
    with engine.connect() as conn:  # nothing stored in the study (notes, attributes) holds it
        for table in ("study_user_attributes", "study_system_attributes",
                      "trial_user_attributes", "trial_system_attributes"):  # fmt: skip
            for (value,) in conn.exec_driver_sql(f"SELECT value_json FROM {table}"):
                assert password not in value, table
    engine.dispose()
    artifacts = Path(study_env["tmp"]) / "runs" / "artifacts"
    assert any(p.is_file() for p in artifacts.rglob("*")), "the run uploaded no artifacts"
    for file in Path(study_env["tmp"]).rglob("*"):  # artifacts, notes, caches
        if file.is_file() and file.stat().st_size < 10_000_000:
            assert password.encode() not in file.read_bytes(), file
