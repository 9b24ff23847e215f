"""Files the commands write for users (reports, exported configs): whole or not at all.

A report is written beside its final name and renamed over it, so a disk that fills halfway, or an
interrupt, leaves the previous file (or none) rather than a torn one that a browser half-renders.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder; the folder is made if missing
    and removed again if this call made it and the write failed."""
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in made:  # innermost first: only the empty folders this call made
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return path
