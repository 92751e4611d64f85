"""Running studies safely: the storage contract and the worker around it.

- ``storage``: :func:`open_storage` (SQLite file, PostgreSQL, journal), JSON-only attribute
  checks, the stock-Optuna switch (``EVOLVER_OPT_STOCK_OPTUNA=1``);
- ``batched_storage``, ``trial_reader``, ``lazy_params``: fewer round trips per trial
  (params written once with the trial's first write, finished trials read as plain rows,
  their params read on first use); Optuna's own storage test suite runs against them;
- ``worker`` (the loop), ``signals``, ``heartbeat``, ``storage_guard``, ``rescue``,
  ``requeue``, ``outcome``: one trial at a time without losing a finished one.

Nothing here imports the samplers, the merge engine or the evaluator.
"""
