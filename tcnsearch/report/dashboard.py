"""`tcnsearch dashboard`: optuna-dashboard on the one database, bound to loopback unless told otherwise, with
the study's artifact folder (the best trials' weights) to list and download on each trial's page."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna

from tcnsearch.compat.optuna import cached
from tcnsearch.search import open_storage
from tcnsearch.search.artifacts import artifact_folder, open_store
from tcnsearch.storage import masked, resolve_url


def serve_dashboard(storage: str | None = None, host: str = "127.0.0.1", port: int = 8080,
                    artifacts: str | Path | None = None) -> None:
    """Serve until interrupted. The artifact folder is served where it exists (it is never created here).

    Raises:
        UserError: the database is unreachable, or `artifacts` names no folder (checked before the server starts).
    """
    import optuna_dashboard

    url = resolve_url(storage)
    open_storage(url, read_only=True)  # refuses a missing file, or one without Optuna's tables, creating nothing
    folder = artifact_folder(url, artifacts)
    store = open_store(folder, create=False) if artifacts is not None or folder.is_dir() else None
    rdb = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
    shown = f", artifacts in {folder}" if store is not None else ""
    print(f"optuna-dashboard on {masked(url)}{shown}: http://{host}:{port}/ (Ctrl-C stops it)", file=sys.stderr,
          flush=True)
    # Through Optuna's cache of finished trials (Optuna never changes a finished trial): optuna-dashboard reads
    # a big study's every trial again each time its own 10 s cache of them expires
    optuna_dashboard.run_server(cached(rdb), host=host, port=port, artifact_store=store)
