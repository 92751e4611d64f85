"""Fault 13, second half: the PostgreSQL connection dropped mid-run (a TCP proxy in front of the
server is cut and restored). Short outage: the worker retries and goes on. Long outage: it
stops with a message naming the URL without its password. No finished trial is lost."""

from __future__ import annotations

import time

import pytest
import sqlalchemy
from optuna.trial import TrialState

from tests.reliability._proxy import TcpProxy
from tests.reliability.conftest import synthetic_worker, trials_of

pytestmark = pytest.mark.postgres
PASSWORD = "s3cret-pw"  # trust auth ignores it; it must never be printed


def _finished(url: str) -> dict[int, tuple]:
    return {
        t.number: (t.state, t.value, t.params) for t in trials_of(url, "s") if t.state.is_finished()
    }


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_database_dropped_mid_run_retries_then_stops_clearly_and_loses_nothing(fresh_pg, tmp_path):
    direct = sqlalchemy.engine.make_url(fresh_pg)
    proxy = TcpProxy((direct.host, direct.port or 5432)).start()
    url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{proxy.port}/{direct.database}"
    shown = f"postgresql+psycopg://postgres:***@127.0.0.1:{proxy.port}/{direct.database}"
    log = tmp_path / "worker.log"
    # 100 ms trials, so that the cuts land mid-run; calls retried for 10 s (about 4 tries).
    worker = synthetic_worker(url, "s", 400, "sleep", "100", log=log, EVOLVER_TEST_RETRY_S="10")
    try:
        _wait_for(lambda: len(_finished(fresh_pg)) >= 8, "8 finished trials")
        # 1. A short outage (2 s): retried, the run goes on.
        before_short = _finished(fresh_pg)
        proxy.stop()
        time.sleep(2)
        proxy.start()
        n = len(before_short)
        _wait_for(lambda: len(_finished(fresh_pg)) >= n + 8, "8 more trials after the outage")
        assert worker.poll() is None, log.read_text()
        # 2. A long outage: the worker stops within its bound, naming the URL.
        before_long = _finished(fresh_pg)
        proxy.stop()
        assert worker.wait(timeout=120) == 1, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        proxy.stop()
    out = log.read_text()
    assert f"storage {shown}: could not " in out and "; retrying" in out  # the short outage
    assert f"Error: storage {shown} was unreachable for 10 s (could not " in out
    assert "Finished trials are kept; run the same command again to resume." in out
    assert PASSWORD not in out and "Traceback" not in out
    after_outages = _finished(fresh_pg)
    for number, trial in {**before_short, **before_long}.items():
        assert after_outages[number] == trial  # nothing finished was lost or changed

    # 3. The server is back: the next worker resumes (a trial left RUNNING is retried).
    proxy.start()  # (the heartbeat of a trial left in flight stopped > 2 s ago: it is stale)
    budget = len(after_outages) + 6
    assert synthetic_worker(url, "s", budget, "run", log=log).wait(timeout=300) == 0, (
        log.read_text()
    )
    proxy.stop()
    final = trials_of(fresh_pg, "s")
    assert TrialState.RUNNING not in [t.state for t in final]
    for number, trial in after_outages.items():
        assert (final[number].state, final[number].value, final[number].params) == trial
    assert PASSWORD not in log.read_text()
