"""Names that become parts of paths: study, device and task names, and names read back from a database.

A name from outside (a flag, a study file, a stored study) never decides where a file goes: a name
we create is checked against `SAFE` and refused otherwise; a name we only read is turned into a safe
file name, so that `../../x` or `/etc/passwd` stays a harmless string inside the chosen folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from tcnsearch.errors import UserError

SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str, what: str) -> str:
    """`name` if it is a safe name (letters, digits, '.', '_', '-'; at most 100; not starting with '.')."""
    if not isinstance(name, str) or not SAFE.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 60 else f"{str(name)[:60]}..."
        raise UserError(f"{what} {shown!r} is not a usable name: use 1-100 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit")
    return name


def file_name(name: str) -> str:
    """A safe file name for any string: runs of other characters become '-', never empty, at most 100."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")[:100].strip(".-")
    return slug or "unnamed"


def inside(folder: Path, name: str) -> Path:
    """folder / file_name(name), which cannot leave `folder`."""
    path = Path(folder) / file_name(name)
    assert path.parent == Path(folder)  # file_name has no separators
    return path
