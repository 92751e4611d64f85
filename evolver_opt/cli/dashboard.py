"""``evolver-opt dashboard``: optuna-dashboard on the study storage, with its artifact store.

Serves the default storage (``$EVOLVER_OPT_STORAGE`` or ``runs/evolver.db``, where ``demo``,
``run`` and ``compare`` write), bound to 127.0.0.1 unless ``--host``
says otherwise; the artifact store is the folder that ``run``, ``compare`` and ``demo`` upload
notes' artifacts into (``<db>-artifacts`` beside a SQLite file, see
:func:`evolver_opt.reports.notes.artifact_dir`).
"""

from __future__ import annotations

import click

from evolver_opt.cli._options import storage_option


@click.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind to.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--artifacts",
    default=None,
    type=click.Path(file_okay=False),
    help="Artifact folder (default: <db>-artifacts beside a SQLite or journal file).",
)
def dashboard(storage: str | None, host: str, port: int, artifacts: str | None) -> None:
    """Inspect studies in optuna-dashboard (notes, artifacts, trial user attributes)."""
    from pathlib import Path

    from optuna.artifacts import FileSystemArtifactStore

    from evolver_opt.errors import EvolverError
    from evolver_opt.reports.notes import artifact_dir
    from evolver_opt.runtime.storage import default_url, open_storage, redact, sqlite_path

    url = storage or default_url()
    database = sqlite_path(url)
    if database is not None and not database.is_file():
        raise click.ClickException(
            f"no study database at {database}; run `evolver-opt demo` (or `run`/`compare`) "
            "first, or give --storage URL"
        )
    try:
        opened = open_storage(url, heartbeat_interval=None)
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    folder = Path(artifacts) if artifacts else artifact_dir(url)
    folder.mkdir(parents=True, exist_ok=True)
    from optuna_dashboard import run_server

    shown = f"[{host}]" if ":" in host else host
    click.echo(f"optuna-dashboard on {redact(url)} (artifacts: {folder})")
    click.echo(f"open http://{shown}:{port}/dashboard/  (Ctrl+C stops it)", nl=True)
    try:
        run_server(
            opened, host=host, port=port, artifact_store=FileSystemArtifactStore(str(folder))
        )
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve on {host}:{port}: {exc.strerror or exc}; choose another --port or --host"
        ) from None
    except KeyboardInterrupt:
        click.echo("stopped")
