"""Ray 2.60 private API that tcnsearch relies on (tests/test_compat.py).

Ray's single-machine mode (what it runs on macOS and Windows) keeps the GCS, the raylet, the object
manager and the workers on 127.0.0.1, where the ordinary mode turns 127.0.0.1 as a node address
into the machine's public one. It is read from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER by the processes
Ray starts, and by this process from `ray._private.ray_constants.ENABLE_RAY_CLUSTER` at import:
there is no public switch, so a local runtime that must listen on loopback only sets both, and
puts them back when it stops.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def single_machine_mode() -> Iterator[None]:
    """Ray's single-machine mode for the runtime started inside the block; everything as it was after."""
    from ray._private import ray_constants

    saved_env, saved_constant = os.environ.get(SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE] = "0"  # the processes Ray starts read it from their environment
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process read it at import
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE, None)
        else:
            os.environ[SINGLE_MACHINE] = saved_env
        ray_constants.ENABLE_RAY_CLUSTER = saved_constant


def single_machine_mode_is_on() -> bool:
    from ray._private import ray_constants

    return ray_constants.ENABLE_RAY_CLUSTER is False and os.environ.get(SINGLE_MACHINE) == "0"
