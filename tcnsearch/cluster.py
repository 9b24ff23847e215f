"""The Ray cluster a profile or a study joins with `--ray-address`, checked before anything waits on it."""

from __future__ import annotations

import socket

from tcnsearch.errors import UserError


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on: ray.init itself retries for minutes.

    Raises:
        UserError: nothing listens at `address`.
    """
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms are for Ray to resolve
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserError(f"cannot reach the Ray cluster at {address!r}: {err.strerror or err}; "
                        "check --ray-address (e.g. 127.0.0.1:6379)") from None
