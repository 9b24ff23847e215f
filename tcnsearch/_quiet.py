"""Third-party warnings that tell a tcnsearch user nothing they can act on, silenced in one place.

Matched by message, so that the CLI can install them before importing Optuna.
"""

import warnings

_IGNORED = (
    # Optuna calls heartbeats, metric names and fail_stale_trials experimental; they are stable in
    # practice and exactly what a study needs.
    r".* is experimental \(supported from v",
    r"Argument ``\w+`` is an experimental feature",
    # We drive heartbeats ourselves with ask/tell rather than through Study.optimize.
    r"Heartbeat of storage is supposed to be used with Study.optimize",
)


def quiet_third_party() -> None:
    for message in _IGNORED:
        warnings.filterwarnings("ignore", message=message)
