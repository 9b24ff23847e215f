"""`tcnsearch dashboard`: optuna-dashboard on the one database, bound to loopback unless told otherwise."""

from __future__ import annotations

import sys

import optuna

from tcnsearch.search import open_storage
from tcnsearch.storage import masked, resolve_url


def serve_dashboard(storage: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until interrupted.

    Raises:
        UserError: the database is unreachable (checked before the server starts).
    """
    import optuna_dashboard

    url = resolve_url(storage)
    open_storage(url, read_only=True)  # refuses a missing file, or one without Optuna's tables, creating nothing
    rdb = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
    print(f"optuna-dashboard on {masked(url)}: http://{host}:{port}/ (Ctrl-C stops it)", file=sys.stderr, flush=True)
    optuna_dashboard.run_server(rdb, host=host, port=port)
